"""Pattern and instrument readers, on the real files and on small files written in each format."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from xbeam_bluesky.rietveld import read_instrument, read_pattern


def test_gsas_std_real_file(data_dir):
    p = read_pattern(data_dir / "pbso4" / "PBSO4.XRA")
    assert len(p.two_theta) == 6001  # BANK line: 6001 channels (the last record is zero-padded)
    assert p.two_theta[0] == pytest.approx(10.0) and p.two_theta[-1] == pytest.approx(160.0)
    np.testing.assert_allclose(p.counts[:5], [179, 147, 165, 172, 150])
    np.testing.assert_allclose(p.sigma[:2], np.sqrt([179, 147]))
    lab6 = read_pattern(data_dir / "lab6" / "NIST660CBI.gsas")
    assert len(lab6.two_theta) == 8378
    assert lab6.two_theta[0] == pytest.approx(15.0066) and lab6.two_theta[1] - lab6.two_theta[
        0
    ] == pytest.approx(0.0131303)


def test_bruker_raw_real_file(data_dir):
    p = read_pattern(data_dir / "lab6" / "LaB6_Jan2018.raw")
    assert "RAW1.01" in p.source
    assert len(p.two_theta) == 3040
    assert p.two_theta[0] == pytest.approx(10.0) and p.two_theta[-1] == pytest.approx(
        70.0, abs=0.01
    )  # step 0.0197448°
    assert np.all(p.counts >= 0) and p.counts.max() > 100 * np.median(p.counts) / 10
    # the strongest LaB6 line in 10-70° is 110 at 2θ ≈ 30.4° (a = 4.1569 Å, Cu Kα1)
    expected = 2 * np.degrees(np.arcsin(1.5406 / (2 * 4.1569 / np.sqrt(2))))
    assert p.two_theta[np.argmax(p.counts)] == pytest.approx(expected, abs=0.1)


def _std_like(tmp_path):
    x = 10 + 0.05 * np.arange(40)
    y = 100 + 50 * np.exp(-((x - 11) ** 2) / 0.01)
    return x, np.round(y)


def test_gsas_esd_alt_fxye(tmp_path):
    x, y = _std_like(tmp_path)
    e = np.sqrt(y)
    # ESD: (x start, step in centidegrees), pairs of F8 per value
    lines = ["title", f"BANK 1 {len(x)} {len(x) // 5} CONST {x[0] * 100:.1f} 5.0 0 0 ESD"]
    vals = [f"{v:8.1f}{s:8.2f}" for v, s in zip(y, e, strict=True)]
    lines += ["".join(vals[i : i + 5]) for i in range(0, len(vals), 5)]
    (tmp_path / "a.esd").write_text("\n".join(lines) + "\n")
    p = read_pattern(tmp_path / "a.esd")
    np.testing.assert_allclose(p.two_theta, x)
    np.testing.assert_allclose(p.counts, y)
    np.testing.assert_allclose(p.sigma, e, atol=0.005)
    # ALT: 4 × (2θ in 1/32 centidegree F8, y × 1000 F7, esd × 1000 F5) per line (GSAS-II's reading)
    y, e = y / 100, np.round(np.sqrt(y) / 100, 2)  # keep y·1000 and esd·1000 within their field widths
    lines = ["title", f"BANK 1 {len(x)} {len(x) // 4} RALF {x[0] * 100:.1f} 5.0 0 0 ALT"]
    recs = [f"{xx * 3200:8.0f}{yy * 1000:7.0f}{ee * 1000:5.0f}" for xx, yy, ee in zip(x, y, e, strict=True)]
    lines += ["".join(recs[i : i + 4]) for i in range(0, len(recs), 4)]
    (tmp_path / "a.alt").write_text("\n".join(lines) + "\n")
    p = read_pattern(tmp_path / "a.alt")
    np.testing.assert_allclose(p.two_theta, x)
    np.testing.assert_allclose(p.counts, y)
    np.testing.assert_allclose(p.sigma, e)
    y, e = y * 100, np.sqrt(y * 100)
    # FXYE: x in centidegrees, y, esd
    lines = ["title", f"BANK 1 {len(x)} {len(x)} CONST {x[0] * 100:.1f} 5.0 0 0 FXYE"]
    lines += [f"{xx * 100:.3f} {yy:.2f} {ee:.4f}" for xx, yy, ee in zip(x, y, e, strict=True)]
    (tmp_path / "a.fxye").write_text("\n".join(lines) + "\n")
    p = read_pattern(tmp_path / "a.fxye")
    np.testing.assert_allclose(p.two_theta, x)
    np.testing.assert_allclose(p.sigma, e, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "sep", "header", "three"),
    [
        ("a.xy", " ", "", False),
        ("b.xye", "\t", "# 2theta counts esd\n", True),
        ("c.csv", ",", "twotheta,I\n", False),
        ("d.txt", ";", "", True),
    ],
)
def test_column_files(tmp_path, name, sep, header, three):
    x, y = _std_like(tmp_path)
    rows = [
        sep.join([f"{a:.3f}", f"{b:.1f}"] + ([f"{np.sqrt(b) * 2:.3f}"] if three else []))
        for a, b in zip(x, y, strict=True)
    ]
    (tmp_path / name).write_text(header + "\n".join(rows) + "\n")
    p = read_pattern(tmp_path / name)
    np.testing.assert_allclose(p.two_theta, x, atol=5e-4)
    np.testing.assert_allclose(p.counts, y)
    np.testing.assert_allclose(p.sigma, 2 * np.sqrt(y) if three else np.sqrt(y), atol=1e-3)


def test_fullprof_dat(tmp_path):
    x, y = _std_like(tmp_path)
    counts = " ".join(f"{int(v)}" for v in y)
    (tmp_path / "f.dat").write_text(f"PbSO4 test pattern\n{x[0]:.3f} 0.05 {x[-1]:.3f}\n{counts}\n")
    p = read_pattern(tmp_path / "f.dat")
    assert "FullProf" in p.source
    np.testing.assert_allclose(p.two_theta, x)
    np.testing.assert_allclose(p.counts, y)


def test_bruker_uxd_both_layouts(tmp_path):
    x, y = _std_like(tmp_path)
    head = "; UXD file\n_FILEVERSION=1\n_WL1=1.5406\n"
    (tmp_path / "a.uxd").write_text(
        head + f"_2THETA={x[0]:.3f}\n_STEPSIZE=0.05\n_COUNTS\n" + "\n".join(f"{int(v)}" for v in y) + "\n"
    )
    p = read_pattern(tmp_path / "a.uxd")
    np.testing.assert_allclose(p.two_theta, x)
    np.testing.assert_allclose(p.counts, y)
    (tmp_path / "b.uxd").write_text(
        head + "_2THETACOUNTS\n" + "\n".join(f"{a:.3f} {int(b)}" for a, b in zip(x, y, strict=True)) + "\n"
    )
    p = read_pattern(tmp_path / "b.uxd")
    np.testing.assert_allclose(p.two_theta, x)


def _raw_v1_range(start: float, step: float, counts: np.ndarray, more: int) -> bytes:
    """One DIFFRAC-AT v1 range laid out from the published field list (144-byte header)."""
    header = bytearray(144)
    struct.pack_into("<I", header, 0, len(counts))  # steps
    struct.pack_into("<f", header, 4, 1.0)  # time per step
    struct.pack_into("<f", header, 8, step)
    struct.pack_into("<f", header, 20, start)  # start 2θ
    struct.pack_into("<f", header, 24, start / 2)  # start θ
    header[28:36] = b"sample\x00\x00"
    struct.pack_into("<ff", header, 60, 1.5406, 1.5444)
    struct.pack_into("<I", header, 140, more)  # another range follows
    return bytes(header) + np.asarray(counts, dtype="<f4").tobytes()


def test_bruker_raw_v1_and_v2_synthetic(tmp_path):
    x, y = _std_like(tmp_path)
    half = len(x) // 2
    blob = (
        b"RAW " + _raw_v1_range(x[0], 0.05, y[:half], 1) + b"RAW " + _raw_v1_range(x[half], 0.05, y[half:], 0)
    )
    (tmp_path / "v1.raw").write_bytes(blob)
    p = read_pattern(tmp_path / "v1.raw")
    assert "RAW v1" in p.source
    np.testing.assert_allclose(p.two_theta, x, atol=1e-5)
    np.testing.assert_allclose(p.counts, y)
    # v2: range count at byte 4, first range header at byte 256 (uint16 length, uint16 steps, ..., step, start)
    head = bytearray(256)
    head[0:4] = b"RAW2"
    struct.pack_into("<H", head, 4, 1)
    rng = bytearray(48)
    struct.pack_into("<HH", rng, 0, 48, len(y))
    struct.pack_into("<fff", rng, 8, 1.0, 0.05, float(x[0]))
    (tmp_path / "v2.raw").write_bytes(bytes(head) + bytes(rng) + np.asarray(y, dtype="<f4").tobytes())
    p = read_pattern(tmp_path / "v2.raw")
    assert "RAW2" in p.source
    np.testing.assert_allclose(p.two_theta, x, atol=1e-5)
    np.testing.assert_allclose(p.counts, y)
    (tmp_path / "v4.raw").write_bytes(b"RAW4.00" + bytes(200))
    with pytest.raises(ValueError, match=r"RAW4\.00"):
        read_pattern(tmp_path / "v4.raw")


def test_instrument_readers(data_dir):
    prm = read_instrument(data_dir / "pbso4" / "INST_XRY.PRM")
    assert (prm.wavelength1, prm.wavelength2, prm.ratio, prm.polarization) == (1.5405, 1.5443, 0.5, 0.7)
    assert (prm.u, prm.v, prm.w, prm.x, prm.y) == (2.0, -2.0, 5.0, 0.0, 0.0)
    assert prm.sh_l == 0.002  # as GSAS-II sets it when importing an old GSAS .PRM
    ip = read_instrument(data_dir / "lab6" / "CuKa_lab_default.instprm")
    assert (ip.wavelength1, ip.u, ip.v, ip.w, ip.sh_l, ip.polarization) == (
        1.5405,
        2.0,
        -2.0,
        5.0,
        0.002,
        0.7,
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\x01\x02binary junk" * 20, "no known format"),
        (b"hello world\nthis is not a pattern\n", "no known format"),
        (
            b"10 1\n11 2\n10.5 3\n" + b"".join(f"{12 + i} 5\n".encode() for i in range(20)),
            "not strictly increasing",
        ),
        (b"".join(f"{10 + i * 0.1:.1f} {'nan' if i == 7 else 5}\n".encode() for i in range(30)), "NaN"),
        (b"10 1\n11 2\n", "only 2 points"),
    ],
)
def test_bad_pattern_files(tmp_path, content, match):
    f = tmp_path / "bad.dat"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        read_pattern(f)
    assert "bad.dat" in str(info.value)


def test_missing_and_bad_instrument(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_pattern(tmp_path / "nope.xy")
    (tmp_path / "x.instprm").write_text("nothing useful here\n")
    with pytest.raises(ValueError, match=r"x\.instprm"):
        read_instrument(tmp_path / "x.instprm")
    (tmp_path / "y.instprm").write_text("Lam1:abc;U:2\n")
    with pytest.raises(ValueError, match="Lam1"):
        read_instrument(tmp_path / "y.instprm")
