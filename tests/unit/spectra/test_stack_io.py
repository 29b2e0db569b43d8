"""Stack readers on the real ALS STXM stack (aXis2000 .hdr/.xim, NXstxm, TIFF) and on hand-made HDF5 layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from xbeam_bluesky.spectra import StackFormatError, bright_region_i0, optical_density, read_stack
from xbeam_bluesky.spectra.stack_io import parse_axis2000_header, read_xim

DATA = Path(__file__).resolve().parents[2] / "data" / "stxm_FeL_71214078"
KEPT_XIM = {0: "71214078_a000.xim", 45: "71214078_a045.xim", 122: "71214078_a122.xim"}


@pytest.fixture(scope="module")
def nxs():
    return read_stack(DATA / "71214078.nxs")


def test_header_scan_definition():
    h = parse_axis2000_header(DATA / "71214078.hdr")
    assert h["x_um"].size == 125 and h["y_um"].size == 125
    assert h["energies"].size == 123
    assert h["energies"][0] == 700.0 and h["energies"][-1] == pytest.approx(730.353)
    assert np.allclose(np.loadtxt(DATA / "Energy.txt"), h["energies"])
    assert h["dwell_ms"] == pytest.approx(0.433)
    assert np.allclose(np.diff(h["x_um"]), 0.08) and h["x_um"][0] == pytest.approx(-4736.602)
    # the header lists Image2 … Image123 (none for the first image)
    assert sorted(h["ring_current_mA"]) == list(range(2, 124)) and h["ring_current_mA"][2] == 333.08


def test_real_xim_match_the_converted_nxstxm_frames(nxs):
    assert nxs.shape == (123, 125, 125) and nxs.kind == "counts"
    assert nxs.pixel_um == pytest.approx(0.08) and nxs.dwell_ms == pytest.approx(0.433)
    for k, name in KEPT_XIM.items():
        image = read_xim(DATA / name, (125, 125))
        assert np.array_equal(image, nxs.frames[k])
    # the text itself: first value of the first row of image 0 as written in the file
    first = float((DATA / KEPT_XIM[0]).read_text().split()[0])
    assert nxs.frames[0, 0, 0] == pytest.approx(first, rel=1e-6)


def test_axis2000_stack_needs_every_image_and_reads_them(tmp_path: Path, nxs):
    shutil.copy(DATA / "71214078.hdr", tmp_path)
    with pytest.raises(
        StackFormatError, match=r"123 energies but 123 images are missing \(first 71214078_a000"
    ):
        read_stack(tmp_path / "71214078.hdr")
    sub = nxs.frames[:, :7, :5]  # header announces 125×125: a smaller image is an error naming the file
    np.savetxt(tmp_path / "71214078_a000.xim", sub[0], delimiter="\t")
    for k in range(1, 123):
        np.savetxt(tmp_path / f"71214078_a{k:03d}.xim", nxs.frames[k], delimiter="\t", fmt="%.6f")
    with pytest.raises(StackFormatError, match=r"71214078_a000.xim: image of 7×5 .* expects 125×125"):
        read_stack(tmp_path / "71214078.hdr")
    np.savetxt(tmp_path / "71214078_a000.xim", nxs.frames[0], delimiter="\t", fmt="%.6f")
    stack = read_stack(tmp_path / "71214078.hdr")
    assert stack.provenance["format"] == "aXis2000 .hdr/.xim"
    assert np.allclose(stack.frames, nxs.frames, atol=1e-4)
    assert np.array_equal(stack.energies, nxs.energies)


def test_tiff_with_energy_list_is_the_subpreedge_stack(nxs):
    sub = read_stack(DATA / "SubPreEdge" / "71214078.tif")
    assert sub.shape == nxs.shape and sub.provenance["energies"].endswith("Energy.txt")
    assert np.allclose(sub.energies, nxs.energies)
    # each pixel's pre-edge OD removed: ln(sub/raw) is that pixel's line in energy (measured: within 1e-4 OD
    # for 73 % of the pixels, within 0.002 OD for 99 % of all values)
    ratio = np.log(sub.frames / nxs.frames).reshape(123, -1)
    fit = np.polynomial.polynomial.polyfit(nxs.energies, ratio, 1)
    resid = np.abs(ratio - np.polynomial.polynomial.polyval(nxs.energies, fit).T)
    assert np.mean(resid.max(axis=0) < 1e-4) > 0.7 and np.percentile(resid, 99) < 0.003


def test_tiff_page_and_energy_count_must_agree(tmp_path: Path):
    tifffile.imwrite(tmp_path / "s.tif", np.ones((4, 3, 2), np.float32))
    with pytest.raises(StackFormatError, match="no energy list"):
        read_stack(tmp_path / "s.tif")
    (tmp_path / "s.txt").write_text("7.11\n7.12\n7.13\n")
    with pytest.raises(StackFormatError, match=r"4 pages but 3 energies"):
        read_stack(tmp_path / "s.tif")
    stack = read_stack(tmp_path / "s.tif", energies=[7100.0, 7110.0, 7120.0, 7130.0], kind="od")
    assert stack.kind == "od" and stack.shape == (4, 3, 2)


def test_hdf5_layouts(tmp_path: Path):
    od = np.random.default_rng(0).uniform(0, 1, (3, 4, 5)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["stack"] = od
        f["stack"].attrs["i0_counts"] = 1000.0
        f["energy"] = [7100.0, 7110.0, 7120.0]
    s = read_stack(tmp_path / "x.h5")
    assert s.kind == "od" and np.array_equal(s.frames, od) and np.all(s.i0 == 1000.0)
    white = np.full((3, 4, 5), 2000.0)
    counts = white * np.exp(-od)
    with h5py.File(tmp_path / "dx.h5", "w") as f:
        f["exchange/data"] = counts
        f["exchange/data_white"] = white
        f["exchange/energy"] = [7.10, 7.11, 7.12]
    s = read_stack(tmp_path / "dx.h5")
    assert (
        s.kind == "od"
        and np.allclose(s.frames, od, atol=1e-6)
        and np.allclose(s.energies, [7100, 7110, 7120])
    )
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["something"] = od
    with pytest.raises(StackFormatError, match=r"bad\.h5: found none of an NXstxm entry"):
        read_stack(tmp_path / "bad.h5")
    with pytest.raises(StackFormatError, match=r"unknown stack format '.npy'"):
        read_stack(tmp_path / "x.npy")


def test_bright_region_i0_and_od_analytic():
    rng = np.random.default_rng(3)
    i0 = np.array([1000.0, 1100.0, 1200.0])
    od = np.zeros((3, 20, 20))
    od[:, 5:, :] = rng.uniform(0.5, 1.5, (3, 15, 20))  # rows 0..4 are off-sample
    counts = i0[:, None, None] * np.exp(-od)
    found = bright_region_i0(counts, fraction=0.25)
    assert found.n_pixels == 100 and found.mask[:5].all() and not found.mask[5:].any()
    assert np.allclose(found.counts, i0)
    assert np.allclose(optical_density(counts, found.counts), od, atol=1e-6)
    box = np.zeros((20, 20), bool)
    box[0:2, 0:3] = True
    assert bright_region_i0(counts, mask=box).n_pixels == 6
    with pytest.raises(StackFormatError, match="expected the image shape"):
        bright_region_i0(counts, mask=np.ones((3, 3), bool))


def test_real_stack_od_and_i0_region(nxs):
    found = bright_region_i0(nxs.frames)
    # the brightest 10 % sit on the support: i0.xsp is ~2.3x those counts (OD of the support ~0.84)
    i0_file = np.loadtxt(DATA / "i0.xsp")[:, 1]
    support = np.log(i0_file / found.counts)
    assert 0.7 < np.median(support) < 0.95
    assert found.n_pixels == pytest.approx(1562, abs=2)


def test_an_absorbance_stack_out_of_the_absorbance_range_is_refused(tmp_path: Path, nxs):
    """The real STXM frames as transmitted counts, and their OD × 1000, are no absorbance: refused naming the
    expected range; the OD itself (median well inside 0–5) is read."""
    i0 = bright_region_i0(nxs.frames)
    od = optical_density(nxs.frames, i0.counts).astype(np.float32)
    for name, frames, ok in (("od", od, True), ("counts", nxs.frames, False), ("od1000", 1000 * od, False)):
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f["stack"], f["energy"] = frames, nxs.energies
        if ok:
            assert read_stack(path).kind == "od"
            continue
        median = float(np.median(np.abs(frames[np.isfinite(frames)])))
        with pytest.raises(
            StackFormatError, match=r"expected absorbance μt = −ln\(I/I0\), typically 0–5"
        ) as exc:
            read_stack(path)
        assert str(path) in str(exc.value) and "raw counts or a scaled absorbance" in str(exc.value)
        reported = float(str(exc.value).split("median |value| ")[1].split(";")[0])
        assert reported == pytest.approx(median, rel=0.05)  # a strided sample of the frames
