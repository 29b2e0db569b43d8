"""The EPICS powder detector with mock signals: xrd_powder into tiled, auto-Rietveld on the stored run, faults."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from bluesky.utils import FailedStatus
from ophyd_async.core import callback_on_mock_put, get_mock_put, init_devices, set_mock_value

from xbeam_bluesky.devices.epics import EpicsPowderDetector, PowderDetectorError, load_epics_config
from xbeam_bluesky.rietveld import read_instrument, simulate_pattern
from xbeam_bluesky.startup import check_rietveld_instrument
from xbeam_bluesky.storage import xrd_pattern

CIF = Path(__file__).parents[3] / "src" / "xbeam_bluesky" / "data" / "cif" / "PbSO4-Wyckoff.cif"
#: A synchrotron powder station (15 keV, no Kα2): not the Cu Kα defaults, so the refinement only finds the
#: CIF's cell if this file reaches it.
INSTPRM = """#GSAS-II instrument parameter file
Type:PXC;Bank:1
Lam:0.8265;Zero:0.0;Polariz.:0.99;Azimuth:0.0
U:1.0;V:-1.0;W:2.0;X:0.0;Y:0.0;Z:0.0;SH/L:0.002
"""
START, STEP, N = 5.0, 0.01, 4501  # 5–50° 2θ
PEAK_COUNTS_PER_S, BACKGROUND_COUNTS_PER_S = 3.0e4, 300.0


def cif_cell(path: Path) -> dict[str, float]:
    """a, b, c (Å) as written in the CIF (esd in parentheses dropped)."""
    text = path.read_text()
    return {
        axis: float(re.search(rf"_cell_length_{axis}\s+([0-9.]+)", text).group(1)) for axis in ("a", "b", "c")
    }


def install_pattern(detector: EpicsPowderDetector, instrument_file: Path, n_out: int = N, seed: int = 1):
    """Stand in for the IOC: each put of 1 to Acquire posts Poisson(rendered counts · AcquireTime)."""
    grid = START + STEP * np.arange(N)
    peaks = simulate_pattern([CIF], grid, instrument=read_instrument(instrument_file))
    rate = PEAK_COUNTS_PER_S * peaks / peaks.max() + BACKGROUND_COUNTS_PER_S
    rng = np.random.default_rng(seed)

    async def acquire(value: bool) -> bool:
        if value:
            exposure = await detector.driver.acquire_time.get_value()
            counts = rng.poisson(rate * exposure)[:n_out]
            set_mock_value(detector.array_data, np.resize(counts, n_out).astype(np.int32))
        return False  # the busy record is done

    callback_on_mock_put(detector.driver.acquire, acquire)


@pytest.fixture
def instrument_file(tmp_path) -> Path:
    path = tmp_path / "station.instprm"
    path.write_text(INSTPRM)
    return path


@pytest.fixture
def xrd(RE):
    with init_devices(mock=True):
        xrd = EpicsPowderDetector(
            "BL:MY:", n_channels=N, two_theta_start_deg=START, two_theta_step_deg=STEP, timeout_s=0.2
        )
    return xrd


@pytest.fixture
def docs(tiled_RE):
    collected: list[tuple[str, dict]] = []
    tiled_RE.subscribe(lambda name, doc: collected.append((name, doc)))
    return collected


def _xrd_powder(xrd, num=1, exposure=1.0):
    from xbeam_bluesky.plans import xrd_powder

    return xrd_powder(xrd, exposure, [str(CIF)], num=num, sample="PbSO4 at 15 keV")


def test_pattern_is_stored_with_its_dtype_and_refines_to_the_cif_cell(
    tiled_RE, tiled_storage, xrd, docs, instrument_file
):
    from xbeam_bluesky.callbacks.remote import LiveContext, live_router
    from xbeam_bluesky.callbacks.rietveld import auto_rietveld

    install_pattern(xrd, instrument_file)
    options = {"rietveld": {"instrument": str(instrument_file), "n_trials": 4, "seed": 0}}
    context = LiveContext(results=tiled_storage.client, options=options)  # the route [live.rietveld] takes
    tiled_RE.subscribe(live_router(context))
    try:
        tiled_RE(_xrd_powder(xrd))
        (uid,) = [d["uid"] for n, d in docs if n == "start"]
        assert auto_rietveld(context).join(timeout=900)
    finally:
        auto_rietveld(context).close()
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    keys = descriptor["data_keys"]
    assert keys["xrd-counts"]["dtype_numpy"] == keys["xrd-two_theta"]["dtype_numpy"] == "<f8"
    assert keys["xrd-counts"]["shape"] == [N] and keys["xrd-two_theta"]["units"] == "deg"
    assert descriptor["configuration"]["xrd"]["data"]["xrd-driver-acquire_time"] == 1.0
    assert get_mock_put(xrd.driver.image_mode).call_args.args[0] == "Single"

    pattern = xrd_pattern(tiled_storage.client[uid])
    np.testing.assert_allclose(pattern.two_theta_deg, START + STEP * np.arange(N))
    assert pattern.counts.shape == (N,) and pattern.counts.max() > 0.9 * PEAK_COUNTS_PER_S

    from xbeam_bluesky.storage import analysis_results

    (result,) = analysis_results(tiled_storage.client, uid, "rietveld")
    md = result.metadata
    assert md["status"] == "success", md.get("error")
    assert md["refinement"]["instrument"]["wavelength1"] == pytest.approx(0.8265)
    assert md["rwp"] < 6.0
    lattice = md["refinement"]["phases"][0]["lattice"]
    esd = md["refinement"]["phases"][0]["lattice_esd"]
    for axis, value in cif_cell(CIF).items():  # the pattern was rendered from this cell: within 5 esd of it
        assert 0 < esd[axis] < 1e-3 and lattice[axis] == pytest.approx(value, abs=5 * esd[axis]), axis


def test_wrong_channel_count_fails_the_run_and_keeps_earlier_patterns(
    tiled_RE, tiled_storage, xrd, docs, instrument_file
):
    install_pattern(xrd, instrument_file)
    calls = {"n": 0}
    good = get_mock_put(xrd.driver.acquire).side_effect

    async def second_is_short(value: bool) -> bool:
        calls["n"] += int(bool(value))
        await good(value)
        if value and calls["n"] == 2:
            set_mock_value(xrd.array_data, np.zeros(N - 3, dtype=np.int32))
        return False

    callback_on_mock_put(xrd.driver.acquire, second_is_short)
    with pytest.raises(FailedStatus) as info:
        tiled_RE(_xrd_powder(xrd, num=3, exposure=0.01))
    assert isinstance(info.value.__cause__, PowderDetectorError)
    message = str(info.value.__cause__)
    assert f"BL:MY:image1:ArrayData delivered {N - 3} counts; expected n_channels = {N}" in message
    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "fail" and "BL:MY:image1:ArrayData" in stop["reason"]
    run = tiled_storage.client[stop["run_start"]]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert xrd_pattern(run).counts.shape == (N,)  # the first pattern is stored
    assert run["primary"].read()["xrd-counts"].shape == (1, N)


def test_acquisition_timeout_names_the_pv_and_stops(tiled_RE, tiled_storage, xrd, docs):
    never = asyncio.Event()

    async def hang(value: bool) -> None:
        if value:
            await never.wait()  # the detector never finishes

    callback_on_mock_put(xrd.driver.acquire, hang)
    with pytest.raises(FailedStatus) as info:
        tiled_RE(_xrd_powder(xrd, exposure=0.01))
    message = str(info.value.__cause__)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert message.startswith("BL:MY:cam1:Acquire: the acquisition of 0.01 s did not complete within")
    assert "acquisition stopped (put 0)" in message
    assert [c.args[0] for c in get_mock_put(xrd.driver.acquire).call_args_list] == [True, False]
    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "fail" and "BL:MY:cam1:Acquire" in stop["reason"]
    assert tiled_storage.client[stop["run_start"]].metadata["stop"]["exit_status"] == "fail"


def test_abort_mid_exposure_stops_the_acquisition(tiled_RE, tiled_storage, xrd, docs):
    import threading

    from bluesky.utils import RunEngineInterrupted

    released = {}

    async def long_exposure(value: bool) -> None:
        event = released.setdefault("event", asyncio.Event())
        if value:
            await event.wait()  # a 100 s exposure, ended only by Acquire = 0
        else:
            event.set()

    callback_on_mock_put(xrd.driver.acquire, long_exposure)
    threading.Timer(1.0, tiled_RE.request_pause, kwargs={"defer": False}).start()
    with pytest.raises(RunEngineInterrupted):
        tiled_RE(_xrd_powder(xrd, exposure=100.0))
    tiled_RE.abort("operator abort")
    # unstage put 0 to Acquire: the IOC stops exposing, the run is closed as aborted
    assert [c.args[0] for c in get_mock_put(xrd.driver.acquire).call_args_list] == [True, False]
    (stop,) = [d for n, d in docs if n == "stop"]
    assert stop["exit_status"] == "abort"
    assert tiled_storage.client[stop["run_start"]].metadata["stop"]["exit_status"] == "abort"


def test_array_plugin_silent_names_the_array_pv(RE, xrd):
    import bluesky.plan_stubs as bps

    callback_on_mock_put(xrd.driver.acquire, lambda value: False)  # acquires, but nothing is posted
    with pytest.raises(FailedStatus) as info:
        RE(bps.trigger(xrd, wait=True))
    assert str(info.value.__cause__).startswith("BL:MY:image1:ArrayData: no new array within 0.2 s")


def test_two_theta_waveform_is_read_and_checked(RE):
    import bluesky.plan_stubs as bps
    from bluesky.run_engine import call_in_bluesky_event_loop

    with init_devices(mock=True):
        xrd = EpicsPowderDetector(
            "BL:MY:", n_channels=4, two_theta_start_deg=10.0, two_theta_step_deg=1.0, two_theta_pv="BL:MY:TTH"
        )
    measured = np.array([10.1, 11.05, 12.0, 13.2])
    set_mock_value(xrd.two_theta_pv, measured)
    callback_on_mock_put(
        xrd.driver.acquire,
        lambda value: set_mock_value(xrd.array_data, np.arange(4, dtype=np.int32)) or False,
    )
    RE(bps.trigger(xrd, wait=True))
    np.testing.assert_array_equal(call_in_bluesky_event_loop(xrd.two_theta.get_value()), measured)
    np.testing.assert_array_equal(call_in_bluesky_event_loop(xrd.counts.get_value()), [0.0, 1.0, 2.0, 3.0])
    set_mock_value(xrd.two_theta_pv, measured[:3])
    with pytest.raises(FailedStatus) as info:
        RE(bps.trigger(xrd, wait=True))
    assert "BL:MY:TTH delivered 3 2θ values (deg); expected n_channels = 4" in str(info.value.__cause__)


def test_default_mock_renders_a_pattern(RE):
    import bluesky.plan_stubs as bps
    from bluesky.run_engine import call_in_bluesky_event_loop

    with init_devices(mock=True):
        xrd = EpicsPowderDetector("BL:MY:", n_channels=501, two_theta_start_deg=20.0, two_theta_step_deg=0.02)
    RE(bps.mv(xrd.exposure, 0.01))
    RE(bps.trigger(xrd, wait=True))
    counts = call_in_bluesky_event_loop(xrd.counts.get_value())
    assert counts.shape == (501,) and counts.max() > 10 * np.median(counts) > 0  # Bragg peaks on a background


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "n_channels = 1\ntwo_theta_start_deg = 5.0\ntwo_theta_step_deg = 0.01",
            r"n_channels = 1; expected an integer ≥ 2",
        ),
        (
            "n_channels = 100\ntwo_theta_start_deg = 5.0\ntwo_theta_step_deg = 0.0",
            r"two_theta_step_deg = 0.0; expected a positive",
        ),
        (
            "n_channels = 100\ntwo_theta_start_deg = 5.0\ntwo_theta_step_deg = -0.01",
            r"two_theta_step_deg = -0.01",
        ),
        (
            "n_channels = 20000\ntwo_theta_start_deg = 5.0\ntwo_theta_step_deg = 0.01",
            r"expected every channel within \(0, 180\)°",
        ),
        (
            "n_channels = 100.5\ntwo_theta_start_deg = 5.0\ntwo_theta_step_deg = 0.01",
            r"n_channels = 100.5; expected an integer",
        ),
        (
            "n_channels = 100\ntwo_theta_start_deg = 5.0\ntwo_theta_step_deg = 0.01\narray_dtype = 'uint32'",
            r"array_dtype = 'uint32'; expected one of",
        ),
        (
            "n_channels = 100\ntwo_theta_start_deg = 5.0",
            r"missing required key\(s\) \['two_theta_step_deg'\]",
        ),
    ],
)
def test_bad_xrd_config_is_named(tmp_path, table, message):
    from .test_epics_devices import EXAMPLE_TOML

    base = EXAMPLE_TOML.read_text().split("[epics.xrd]")[0]
    path = tmp_path / "bad.toml"
    path.write_text(base + "[epics.xrd]\nprefix = 'BL:MY:'\n" + table + "\n")
    with pytest.raises(ValueError, match=r"bad\.toml: \[epics\.xrd\]") as info:
        load_epics_config(path)
    assert re.search(message, str(info.value)), str(info.value)


def test_instrument_required_in_real_mode_warned_in_mock(tmp_path, instrument_file):
    config = tmp_path / "xbeam.toml"
    with pytest.raises(
        ValueError, match=r"xbeam\.toml: \[epics\.xrd\] .* \[live\.rietveld\] has no instrument"
    ):
        check_rietveld_instrument("real", {"rietveld": {"n_trials": 4}}, config)
    with pytest.warns(UserWarning, match="lab Cu Kα defaults"):
        check_rietveld_instrument("mock", {}, config)
    check_rietveld_instrument("real", {"rietveld": {"instrument": str(instrument_file)}}, config)
    with pytest.raises(FileNotFoundError, match=r"instrument = '/nope.instprm' does not exist"):
        check_rietveld_instrument("real", {"rietveld": {"instrument": "/nope.instprm"}}, config)


def test_mock_namespace_has_xrd_and_lists_it(tmp_path):
    from xbeam_bluesky.startup import build_namespace

    from .test_epics_devices import EXAMPLE_TOML

    config = tmp_path / "xbeam.toml"
    example = EXAMPLE_TOML.read_text().replace("shape = [2048, 2048]", "shape = [4, 6]")
    config.write_text(example.replace("n_channels = 5500", "n_channels = 600"))
    with pytest.warns(UserWarning, match=r"\[live\.rietveld\] has no instrument"):
        ns = build_namespace("mock", config_path=config, data_dir=tmp_path / "data", live=False)
    try:
        assert isinstance(ns["xrd"], EpicsPowderDetector)
        assert "xrd (EpicsPowderDetector)" in ns["banner"]
        assert ns["xrd"].array_data.source == "mock+ca://BL08:MYTHEN:image1:ArrayData"
        (uid,) = ns["RE"](ns["xrd_powder"](ns["xrd"], 0.01, ["PbSO4-Wyckoff.cif"]))
        pattern = xrd_pattern(ns["tiled_client"][uid])
        np.testing.assert_allclose(pattern.two_theta_deg, 2.0 + 0.02 * np.arange(600))
        assert pattern.counts.max() > 0
    finally:
        ns["storage"].close()
    config.write_text(example.split("[epics.xrd]")[0])
    ns = build_namespace("mock", config_path=config, data_dir=tmp_path / "data2", live=False)
    try:
        assert "xrd" not in ns
    finally:
        ns["storage"].close()
