"""Faults and bad input (issue 17), tried automatically: is each one a clear error, masked and reported, or not?

Every case feeds one bad input or one fault to the real code (the ``xbeam`` command in-process, the plans on the
simulated beamline under a RunEngine, the readers, a tiled server killed mid-run) and classifies the outcome:

``clear``
    refused with a user error (exit 2 / :class:`~xbeam_bluesky.errors.XbeamInputError` or ``ValueError``) whose
    message contains what the case expects (the option, the file, the key), nothing written, no input changed;
``masked``
    accepted, with the bad part masked or handled and stated in the result (a count, a warning, a replay);
``lost``
    an input or acquired data destroyed, or a run that does not come back whole;
``silent``
    accepted without a word (exit 0, no error, nothing stated);
``unclear``
    refused, but with a traceback, another exception type or a message that does not name the cause.

Prints one JSON line: the counts per outcome (``lost`` and ``silent`` must be 0), the number of fault classes,
and the cases whose outcome is not the expected one.

    .venv/bin/python benchmarks/faults.py [--only CLASS] [--skip-server] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
XRD = REPO / "tests" / "data" / "xrd"
PBSO4 = XRD / "pbso4"
CIF = PBSO4 / "PbSO4-Wyckoff.cif"
REFS = "Fe2O3_rt_01,Fe3O4_rt_01,FeS2_rt_01"


@dataclass
class Case:
    fault_class: str
    name: str
    run: Callable[[Path], tuple[str, str]]
    expected: str = "clear"


CASES: list[Case] = []


def case(fault_class: str, name: str, expected: str = "clear"):
    def register(fn):
        CASES.append(Case(fault_class, name, fn, expected))
        return fn

    return register


# --------------------------------------------------------------------------------------------- helpers
def _digest(paths: list[Path]) -> dict[Path, str | None]:
    out = {}
    for p in paths:
        if p.is_file():
            out[p] = hashlib.sha1(p.read_bytes()).hexdigest()
        else:
            out[p] = None
    return out


def cli(argv: list[str], expect: list[str], *, intact: tuple[Path, ...] = (), out: Path | None = None,
        ok: Callable[[str], bool] | None = None) -> tuple[str, str]:  # fmt: skip
    """Run ``xbeam argv`` in-process; classify. ``ok(stdout+stderr)`` decides 'masked' on exit 0."""
    from xbeam_bluesky.cli import main

    before = _digest(list(intact))
    out_existed = out is not None and out.exists()
    err, std = io.StringIO(), io.StringIO()
    code: int | str
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(std),
        warnings.catch_warnings(record=True) as w,
    ):
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:
            code = f"traceback {type(exc).__name__}: {exc}"
    text = err.getvalue() + std.getvalue() + "".join(str(x.message) for x in w)
    if _digest(list(intact)) != before:
        return "lost", f"an input changed ({code})"
    if isinstance(code, str):
        return "unclear", code[:300]
    if code == 0:
        if ok is not None and ok(text):
            return "masked", text.strip().splitlines()[-1][:200] if text.strip() else ""
        return "silent", f"exit 0: {text.strip()[-200:]}"
    wrote = out is not None and out.exists() and not out_existed
    missing = [e for e in expect if e not in text]
    if code == 2 and not missing and not wrote:
        return "clear", err.getvalue().strip().splitlines()[-1][:200]
    return "unclear", f"exit {code}, missing {missing}, wrote {wrote}: {text.strip()[-300:]}"


def api(fn: Callable[[], object], expect: list[str], *, ok: Callable[[object, list], bool] | None = None,
        intact: tuple[Path, ...] = ()) -> tuple[str, str]:  # fmt: skip
    """Call ``fn``; a user error naming ``expect`` is 'clear'; a result ``ok(result, warnings)`` is 'masked'."""
    from xbeam_bluesky.errors import XbeamInputError

    before = _digest(list(intact))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            result = fn()
        except (XbeamInputError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            if _digest(list(intact)) != before:
                return "lost", "an input changed"
            msg = str(exc)
            missing = [e for e in expect if e not in msg]
            return ("clear", msg[:200]) if not missing else ("unclear", f"missing {missing}: {msg[:300]}")
        except Exception as exc:
            return "unclear", f"{type(exc).__name__}: {exc}"[:300]
    if _digest(list(intact)) != before:
        return "lost", "an input changed"
    if ok is not None and ok(result, [str(x.message) for x in w]):
        return "masked", "; ".join(str(x.message) for x in w)[:200] or repr(result)[:200]
    return "silent", f"returned {type(result).__name__}"


def _energies() -> np.ndarray:
    return np.linspace(7090.0, 7180.0, 40)


def _absorbance(shape: tuple[int, int] = (20, 20), seed: int = 0) -> np.ndarray:
    """A three-phase Fe K absorbance stack (energy, y, x) with photon noise at 5e4 counts."""
    from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

    lib = aligned_library(load_library(), _energies())
    spectra = np.stack([lib.matrix[lib.names.index(n)] for n in REFS.split(",")])
    truth = (np.arange(shape[0] * shape[1]) * 3 // (shape[0] * shape[1])).reshape(shape)
    mu = 1.2 * (0.3 + spectra[truth]).transpose(2, 0, 1)
    rng, noise = np.random.default_rng(seed), PhotonNoiseModel(gain=1.0, offset=0.0)
    counts = noise.sample_counts(5e4 * np.exp(-mu), rng)
    flat = noise.sample_counts(np.full(mu.shape, 5e4), rng)
    return np.log(np.maximum(flat, 1.0) / np.maximum(counts, 1.0)).astype(np.float32)


def _stack_file(path: Path, stack: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f["stack"] = stack
        f["stack"].attrs["i0_counts"] = 5e4
        f["energy"] = _energies()
    return path


def _cluster(tmp: Path, stack: np.ndarray, expect: list[str], ok=None) -> tuple[str, str]:
    src = _stack_file(tmp / "stack.h5", stack)
    out = tmp / "map.h5"
    argv = ["cluster", src, "--references", REFS, "--out", out]
    return cli(argv, expect, intact=(src,), out=out, ok=ok)


def _refine(
    tmp: Path, pattern: Path, expect: list[str], *extra, cif: Path = CIF, inst=PBSO4 / "INST_XRY.PRM"
):
    out = tmp / "r.json"
    argv = ["refine", pattern, "--cif", cif, "--instrument", inst, "--out", out, *extra]
    return cli(argv, expect, intact=(pattern,), out=out)


# ------------------------------------------------------------------------------- data lost: outputs
@case("output over an input", "cluster --out = the input stack")
def _(tmp):
    src = _stack_file(tmp / "stack.h5", _absorbance())
    return cli(["cluster", src, "--out", src], ["is the input"], intact=(src,))


@case("output over an input", "cluster --out = a link to the input")
def _(tmp):
    src = _stack_file(tmp / "stack.h5", _absorbance())
    (tmp / "link.h5").symlink_to(src)
    return cli(["cluster", src, "--out", tmp / "link.h5"], ["is the input"], intact=(src,))


@case("output over an input", "refine --out = the pattern")
def _(tmp):
    pattern = tmp / "PBSO4.XRA"
    pattern.write_bytes((PBSO4 / "PBSO4.XRA").read_bytes())
    return _refine(tmp, pattern, ["is the input"], "--out", pattern)


@case("output over an input", "refine --out = the CIF")
def _(tmp):
    cif = tmp / "p.cif"
    cif.write_bytes(CIF.read_bytes())
    return cli(["refine", PBSO4 / "PBSO4.XRA", "--cif", cif, "--out", cif], ["is the input"], intact=(cif,))


@case("impossible output", "cluster --out under a regular file")
def _(tmp):
    (tmp / "file").write_text("x")
    src = _stack_file(tmp / "stack.h5", _absorbance())
    return cli(["cluster", src, "--out", tmp / "file" / "m.h5"], ["--out", "cannot write"], intact=(src,))


@case("impossible output", "refine --out is a directory")
def _(tmp):
    return cli(["refine", PBSO4 / "PBSO4.XRA", "--cif", CIF, "--out", tmp], ["--out", "is a directory"])


@case("impossible output", "plan-energies --out in an unwritable folder")
def _(tmp):
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores modes: a folder under a regular file instead
        (tmp / "file").write_text("x")
        ro = tmp / "file"
    argv = ["plan-energies", "--n-points", "5", "--out", ro / "d.json"]
    return cli(argv, ["--out", "cannot write"], out=ro / "d.json")


# ------------------------------------------------------------------------------- data lost: metadata
def _plan_outcome(make_plan: Callable, expect: list[str]) -> tuple[str, str]:
    """Run a plan on the small sim beamline; 'clear' if refused before anything moved or opened a run."""
    from bluesky import RunEngine

    from xbeam_bluesky.errors import XbeamInputError
    from xbeam_bluesky.testing import make_test_beamline

    RE = RunEngine(call_returns_result=False)
    bl = make_test_beamline(tempfile.mkdtemp(prefix="faults-det-"))
    moved = []
    RE.msg_hook = lambda m: moved.append(m.command) if m.command in ("set", "open_run", "trigger") else None
    try:
        RE(make_plan(bl))
    except XbeamInputError as exc:
        missing = [e for e in expect if e not in str(exc)]
        if moved:
            return "unclear", f"refused after {moved[:3]}: {exc}"
        return ("clear", str(exc)[:200]) if not missing else ("unclear", f"missing {missing}: {exc}")
    except Exception as exc:
        return "unclear", f"{type(exc).__name__} after {moved[:3]}: {exc}"[:300]
    return "silent", f"ran ({len(moved)} messages)"


@case("md over plan-owned keys", "xanes_imaging md purpose")
def _(tmp):
    from xbeam_bluesky.plans import xanes_imaging

    return _plan_outcome(lambda bl: xanes_imaging(bl.camera, bl.mono, bl.stage, [7100.0, 7112.0], [[0, 0]], 0.05,
                                                  n_darks=0, md={"purpose": "x"}), ["'purpose'"])  # fmt: skip


@case("md over plan-owned keys", "xanes_imaging md energies")
def _(tmp):
    from xbeam_bluesky.plans import xanes_imaging

    return _plan_outcome(lambda bl: xanes_imaging(bl.camera, bl.mono, bl.stage, [7100.0, 7112.0], [[0, 0]], 0.05,
                                                  n_darks=0, md={"energies": [1.0]}), ["'energies'"])  # fmt: skip


@case("md over plan-owned keys", "xrd_powder md phases")
def _(tmp):
    from xbeam_bluesky.plans import xrd_powder

    return _plan_outcome(lambda bl: xrd_powder(bl.xrd, 0.1, [CIF.name], md={"phases": []}), ["'phases'"])


@case("md over plan-owned keys", "optimal_xanes_imaging md design")
def _(tmp):
    from xbeam_bluesky.plans import optimal_xanes_imaging

    return _plan_outcome(lambda bl: optimal_xanes_imaging(bl.camera, bl.mono, bl.stage, n_points=6, dwell=0.01,
                                                          n_darks=0, md={"design": "mine"}), ["'design'"])  # fmt: skip


# ------------------------------------------------------------------------------ silently wrong: devices
def _slots(camera, mono, stage, shutter=None):
    from xbeam_bluesky.plans import xanes_imaging

    def make(bl):
        get = lambda s: getattr(bl, s) if s else None  # noqa: E731
        return xanes_imaging(get(camera), get(mono), get(stage), [7100.0, 7112.0], [[0.0, 0.0]], 0.05,
                             shutter=get(shutter), n_darks=1)  # fmt: skip

    return make


for _slot_args, _expect in [
    (("xrd", "mono", "stage"), "camera = xrd"),
    (("mono", "mono", "stage"), "camera = mono"),
    (("camera", "stage", "stage"), "mono = stage"),
    (("camera", "mono", "mono"), "stage = mono"),
    (("camera", "mono", "stage", "mono"), "shutter"),
]:
    case("wrong device in a plan slot", f"xanes_imaging{_slot_args}")(
        lambda tmp, a=_slot_args, e=_expect: _plan_outcome(_slots(*a), [e])
    )


@case("wrong device in a plan slot", "xrd_powder(camera)")
def _(tmp):
    from xbeam_bluesky.plans import xrd_powder

    return _plan_outcome(lambda bl: xrd_powder(bl.camera, 0.1, [CIF.name]), ["camera"])


# ----------------------------------------------------------------------- silently wrong: CLI numbers
TILES = ["plan-tiles", "--x", "0:1", "--y", "0:1", "--fov-px", "100,100", "--pixel-um", "10"]

for _argv, _option in [
    ([*TILES, "--readout-s", "-1"], "--readout-s"),
    ([*TILES, "--n-flats", "-1"], "--n-flats"),
    ([*TILES, "--tile-move-s", "nan"], "--tile-move-s"),
    ([*TILES, "--pixel-um", "0"], "--pixel-um"),
    (["plan-energies", "--n-points", "5", "--i0", "1e30"], "--i0"),
    (["plan-energies", "--time-budget", "-5"], "--time-budget"),
    (["plan-energies", "--n-points", "0"], "--n-points"),
    (["plan-energies", "--n-points", "5", "--dwell", "0"], "--dwell"),
]:
    case("out-of-range CLI number", " ".join(_argv[:1] + _argv[-2:]))(
        lambda tmp, a=_argv, o=_option: cli([*a, "--out", tmp / "o.json"], [o], out=tmp / "o.json")
    )


@case("out-of-range CLI number", "cluster --draws -5")
def _(tmp):
    src = _stack_file(tmp / "stack.h5", _absorbance())
    return cli(["cluster", src, "--draws", "-5", "--out", tmp / "m.h5"], ["--draws"], out=tmp / "m.h5")


@case("out-of-range CLI number", "cluster --window 0")
def _(tmp):
    src = _stack_file(tmp / "stack.h5", _absorbance())
    return cli(["cluster", src, "--window", "0", "--out", tmp / "m.h5"], ["--window"], out=tmp / "m.h5")


@case("conflicting options", "plan-tiles --polygon with --x")
def _(tmp):
    argv = ["plan-tiles", "--polygon", "0,0;1,0;1,1", "--x", "0:1", "--fov-px", "100,100", "--pixel-um", "10"]
    return cli([*argv, "--out", tmp / "t.json"], ["--polygon", "--x"], out=tmp / "t.json")


@case("conflicting options", "refine --strategy with --auto")
def _(tmp):
    strategy = tmp / "s.json"
    strategy.write_text('{"stages": [{"refine": ["scale"]}]}')
    argv = ["refine", PBSO4 / "PBSO4.XRA", "--cif", CIF, "--strategy", strategy, "--auto"]
    return cli([*argv, "--out", tmp / "r.json"], ["--strategy", "--auto"], out=tmp / "r.json")


# ------------------------------------------------------------------------ silently wrong: stacks
def _masked_pixels(n: int):
    def ok(text: str) -> bool:
        try:
            summary = json.loads(text[text.index("{") : text.rindex("}") + 1])
        except ValueError:
            return False
        return int(summary.get("masked_pixels", -1)) >= n

    return ok


@case("bad stack", "one all-zero frame")
def _(tmp):
    s = _absorbance()
    s[7] = 0.0
    return _cluster(tmp, s, ["frame", "7"])


@case("bad stack", "one all-NaN frame")
def _(tmp):
    s = _absorbance()
    s[3] = np.nan
    return _cluster(tmp, s, ["frame", "3"])


@case("bad stack", "absorbance x1000")
def _(tmp):
    return _cluster(tmp, _absorbance() * 1000.0, ["raw counts or a scaled absorbance"])


@case("bad stack", "raw counts in /stack")
def _(tmp):
    counts = 5e4 * np.exp(-_absorbance())
    return _cluster(tmp, counts.astype(np.float32), ["raw counts or a scaled absorbance"])


@case("bad stack", "300 of 400 constant pixels", expected="masked")
def _(tmp):
    s = _absorbance()
    s.reshape(len(s), -1)[:, :300] = 0.7
    return _cluster(tmp, s, [], ok=_masked_pixels(300))


@case("bad stack", "dead pixels (zero spectra)", expected="masked")
def _(tmp):
    s = _absorbance()
    s[:, 0, :5] = 0.0
    return _cluster(tmp, s, [], ok=_masked_pixels(5))


# ----------------------------------------------------------------------- silently wrong: patterns
def _columns(path: Path, rows, header: str = "") -> Path:
    path.write_text(header + "\n".join(" ".join(f"{v:.6g}" for v in r) for r in rows) + "\n")
    return path


X = np.arange(10.0, 60.0, 0.02)


@case("bad pattern", "negative counts without esds")
def _(tmp):
    return api(lambda: _read(_columns(tmp / "sub.xy", zip(X, 50 * np.sin(X) ** 2 - 10, strict=True))),
               ["negative counts"])  # fmt: skip


@case("bad pattern", "4 unnamed numeric columns")
def _(tmp):
    y = 100 + 50 * np.sin(X) ** 2
    return api(
        lambda: _read(_columns(tmp / "four.dat", zip(X, y, 1 / y, y, strict=True))), ["4 numeric columns"]
    )


@case("bad pattern", "GSAS-II CSV weight column", expected="masked")
def _(tmp):
    y = 100 + 50 * np.sin(X) ** 2
    f = _columns(tmp / "g2.csv", zip(X, y, 1 / y, 0.9 * y, np.full_like(X, 80.0), strict=True),
                 '"x","y_obs","weight","y_calc","y_bkg"\n')  # fmt: skip
    return api(
        lambda: _read(f), [], ok=lambda p, w: np.allclose(p.sigma, np.sqrt(y)) and "weight" in p.source
    )


@case("bad pattern", "all-zero pattern (CLI)")
def _(tmp):
    return _refine(tmp, _columns(tmp / "zero.xy", zip(X, np.zeros_like(X), strict=True)), ["positive count"])


@case("wrong radiation", "neutron instrument (HTYPE PNCR) on X-ray data")
def _(tmp):
    return _refine(tmp, PBSO4 / "PBSO4.XRA", ["neutron"], inst=PBSO4 / "inst_d1a.prm")


@case("wrong radiation", "neutron pattern with X-ray form factors")
def _(tmp):
    return _refine(tmp, PBSO4 / "PBSO4.CWN", ["neutron"])


def _read(path: Path):
    from xbeam_bluesky.rietveld import read_pattern

    return read_pattern(path)


# --------------------------------------------------------------------------- silently wrong: CIFs
_HEAD = (
    "data_x\n_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c 4.0\n_cell_angle_alpha 90\n"
    "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P m -3 m'\nloop_\n"
    "_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
    "_atom_site_occupancy\n_atom_site_U_iso_or_equiv\n"
)


def _bad_cif(tmp: Path, atoms: str, b: float = 4.0) -> Path:
    path = tmp / "bad.cif"
    path.write_text(_HEAD.format(a=4.0, b=b) + atoms)
    return path


def _load(path: Path):
    from xbeam_bluesky.rietveld import load_phase

    return load_phase(path)


for _name, _atoms, _b, _expect in [
    ("cell contradicts its space group", "La1 La 0 0 0 1 0.005\n", 4.1, ["bad.cif", "contradicts"]),
    ("occupancy 2.0", "La1 La 0 0 0 2.0 0.005\n", 4.0, ["bad.cif", "occupancy 2"]),
    ("duplicated atom", "La1 La 0 0 0 0.5 0.005\nLa2 La 0 0 0 0.5 0.005\n", 4.0, ["bad.cif", "duplicated"]),
    ("'?' coordinate", "La1 La 0 0 0 1 0.005\nB1 B ? 0.5 0.5 1 0.005\n", 4.0, ["bad.cif", "'B1'", "'?'"]),
]:
    case("bad CIF", _name)(lambda tmp, a=_atoms, b=_b, e=_expect: api(lambda: _load(_bad_cif(tmp, a, b)), e))


@case("bad CIF", "negative Uiso", expected="masked")
def _(tmp):
    path = _bad_cif(tmp, "La1 La 0 0 0 1 0.005\nB1 B 0.5 0.5 0.5 1 -0.01\n")
    return api(lambda: _load(path), [], ok=lambda p, w: any("'B1'" in m and "Uiso" in m for m in w))


@case("bad CIF", "xrd_powder with a malformed CIF (before the measurement)")
def _(tmp):
    from xbeam_bluesky.plans import xrd_powder

    cif = _bad_cif(tmp, "La1 La 0 0 0 2.0 0.005\n")
    return _plan_outcome(lambda bl: xrd_powder(bl.xrd, 0.1, [str(cif)]), ["bad.cif"])


@case("bad instrument", "NaN wavelength")
def _(tmp):
    text = (PBSO4 / "INST_XRY.PRM").read_text()
    lines = [ln if "ICONS" not in ln else ln[:12] + "       nan" + ln[22:] for ln in text.splitlines()]
    inst = tmp / "nan.prm"
    inst.write_text("\n".join(lines) + "\n")
    return _refine(tmp, PBSO4 / "PBSO4.XRA", ["wavelength"], inst=inst)


# ------------------------------------------------------------------------- unclear: files and servers
@case("unreadable input file", "cluster: a text file named .h5")
def _(tmp):
    bad = tmp / "notes.h5"
    bad.write_text("not an HDF5 file\n")
    return cli(["cluster", bad, "--out", tmp / "m.h5"], ["notes.h5", "HDF5"], intact=(bad,), out=tmp / "m.h5")


@case("unreadable input file", "cluster: a directory as input")
def _(tmp):
    d = tmp / "stack.h5"
    d.mkdir()
    return cli(["cluster", d, "--out", tmp / "m.h5"], ["stack.h5", "directory"], out=tmp / "m.h5")


@case("unreadable input file", "refine: a directory as pattern")
def _(tmp):
    d = tmp / "pattern.xy"
    d.mkdir()
    return _refine(tmp, d, ["pattern.xy", "directory"])


@case("unreadable input file", "refine --strategy: a binary file")
def _(tmp):
    bad = tmp / "strategy.json"
    bad.write_bytes(bytes(range(256)) * 4)
    return _refine(tmp, PBSO4 / "PBSO4.XRA", ["strategy.json"], "--strategy", bad)


@case("unreadable input file", "plan-tiles --design: a binary file")
def _(tmp):
    bad = tmp / "design.json"
    bad.write_bytes(bytes(range(256)) * 4)
    return cli([*TILES, "--design", bad, "--out", tmp / "t.json"], ["design.json"], out=tmp / "t.json")


@case("unreadable input file", "refine: a binary file as CIF")
def _(tmp):
    bad = tmp / "phase.cif"
    bad.write_bytes(bytes(range(256)) * 4)
    return _refine(tmp, PBSO4 / "PBSO4.XRA", ["phase.cif"], cif=bad)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@case("storage unreachable", "cluster UID --tiled-uri (nobody listening)")
def _(tmp):
    uri = f"http://127.0.0.1:{_dead_port()}/api/v1"
    argv = ["cluster", "0123abcd-0000-0000-0000-000000000000", "--tiled-uri", uri, "--out", tmp / "m.h5"]
    return cli(argv, [uri.split("/api")[0].split("//")[1], "unreachable"], out=tmp / "m.h5")


@case("storage unreachable", "open_storage(uri) (nobody listening)")
def _(tmp):
    from xbeam_bluesky.storage import open_storage

    port = _dead_port()
    return api(
        lambda: open_storage(data_dir=tmp, uri=f"http://127.0.0.1:{port}/api/v1"), [str(port), "unreachable"]
    )


@case("busy port", "xbeam serve on a port in use")
def _(tmp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        return cli(["serve", "--data-dir", tmp, "--port", port], [f"--port {port}", "in use"])


# ---------------------------------------------------------------------------- live analysis
@case("live clustering", "a run with 2 energies leaves a failure record", expected="masked")
def _(tmp):
    from xbeam_bluesky.startup import build_namespace
    from xbeam_bluesky.storage import analysis_results

    ns = build_namespace("sim", data_dir=tmp / "data", frame_shape=(16, 16), live=False)
    try:
        from xbeam_bluesky.callbacks import LiveClustering

        live = LiveClustering(ns["storage"].client)
        ns["RE"].subscribe(live)
        (uid,) = ns["RE"](ns["xanes_imaging"](ns["camera"], ns["mono"], ns["stage"], [7100.0, 7130.0],
                                              [[0.0, 0.0]], 0.01, n_darks=0))  # fmt: skip
        live.join(timeout=120)
        results = list(analysis_results(ns["storage"].client, uid, "clustering"))
        if not results:
            return "silent", "no clustering result record"
        meta = results[-1].metadata
        if meta.get("status") == "failed" and "energ" in str(meta.get("error", "")):
            return "masked", f"failure record: {meta.get('error')}"[:200]
        return "unclear", f"record {dict(meta)}"[:300]
    finally:
        ns["storage"].close()


# ---------------------------------------------------------------------------- data lost: storage
KEY = "faultsbenchkey0"


def _serve(data_dir: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from xbeam_bluesky.cli import main; sys.exit(main())", "serve",
         "--data-dir", str(data_dir), "--port", str(port), "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("API:"):
            return proc
    proc.kill()
    raise RuntimeError("xbeam serve did not start")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@case("storage stops mid-run", "xbeam serve killed after event 5 of 16, restarted", expected="masked")
def _(tmp):
    import tiled.client.utils
    from bluesky import RunEngine

    from xbeam_bluesky.plans import acquisition_order, xanes_imaging
    from xbeam_bluesky.storage import frame_table, open_storage, tile_stack
    from xbeam_bluesky.testing import make_test_beamline

    tiled.client.utils.TILED_RETRY_TIMEOUT = 5.0
    energies, tiles = [7100.0, 7112.5, 7125.0, 7150.0], [[0.0, 0.0], [0.32, 0.0], [0.0, 0.4], [0.32, 0.4]]
    data_dir, port = tmp / "data", _dead_port()
    server = _serve(data_dir, port)
    storage = open_storage(data_dir=data_dir, uri=f"http://127.0.0.1:{port}/api/v1", api_key=KEY)
    try:
        RE = RunEngine(call_returns_result=False)
        bl = make_test_beamline(storage.detector_dir)
        seen = {"n": 0, "primary": None}

        def kill(name, doc):
            if name == "descriptor" and doc["name"] == "primary":
                seen["primary"] = doc["uid"]
            if name == "event" and doc["descriptor"] == seen["primary"]:
                seen["n"] += 1
                if seen["n"] == 5:
                    server.kill()
                    server.wait()

        RE.subscribe(kill)
        RE.subscribe(storage.writer)
        (uid,) = RE(xanes_imaging(bl.camera, bl.mono, bl.stage, energies, tiles, 0.05, shutter=bl.shutter,
                                  n_darks=1, n_flats=1))  # fmt: skip
        port = _dead_port()
        server = _serve(data_dir, port)
        again = open_storage(data_dir=data_dir, uri=f"http://127.0.0.1:{port}/api/v1", api_key=KEY)
        run = again.client[uid]
        if (run.metadata.get("stop") or {}).get("exit_status") != "success":
            return "lost", "no stop document after the restart"
        table = frame_table(run)
        expected = acquisition_order(len(energies), len(tiles), "energy")
        if list(zip(table.energy_index, table.tile_index, strict=True)) != expected:
            return "lost", "frames not tied to their energies and tiles"
        if any(tile_stack(run, it).frames.shape != (4, 32, 40) for it in range(len(tiles))):
            return "lost", "a tile stack is incomplete"
        return "masked", "spooled, replayed at open_storage: 16 frames read back by energy and tile"
    finally:
        storage.close()
        _stop(server)


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the cases of this fault class")
    parser.add_argument("--skip-server", action="store_true", help="skip the kill-the-server case (~1 min)")
    parser.add_argument("--verbose", action="store_true", help="print every case's outcome to stderr")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cases = [c for c in CASES if args.only in (None, c.fault_class)]
    if args.skip_server:
        cases = [c for c in cases if c.fault_class != "storage stops mid-run"]
    counts = dict.fromkeys(("clear", "masked", "lost", "silent", "unclear"), 0)
    unexpected = []
    t0 = time.perf_counter()
    for c in cases:
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
            try:
                outcome, detail = c.run(Path(tmp))
            except Exception as exc:  # a crash of the harness around the case: the case is not handled
                outcome, detail = "unclear", f"harness: {type(exc).__name__}: {exc}"
                if args.verbose:
                    traceback.print_exc()
            finally:
                for p in Path(tmp).rglob("*"):  # restore modes changed by a case so the folder can go
                    if p.is_dir():
                        p.chmod(0o700)
        counts[outcome] += 1
        if outcome != c.expected:
            unexpected.append({"class": c.fault_class, "case": c.name, "outcome": outcome, "detail": detail})
        if args.verbose:
            print(f"{outcome:8s} {c.fault_class} / {c.name}: {detail}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "faults",
        "tried": len(cases),
        "classes": len({c.fault_class for c in cases}),
        "clear_error": counts["clear"],
        "masked_reported": counts["masked"],
        "lost": counts["lost"],
        "silent": counts["silent"],
        "unclear": counts["unclear"],
        "not_as_expected": unexpected,
        "wall_s": round(time.perf_counter() - t0, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
