"""Issue 17: bad CLI options refused at parse time, naming the option (nothing computed or written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xbeam_bluesky.cli import main

TILES = ["plan-tiles", "--x", "0:1", "--y", "0:1", "--fov-px", "100,100", "--pixel-um", "10"]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        ([*TILES, "--readout-s", "-1"], "--readout-s"),
        ([*TILES, "--n-flats", "-1"], "--n-flats"),
        ([*TILES, "--tile-move-s", "nan"], "--tile-move-s"),
        (["plan-energies", "--n-points", "5", "--i0", "1e30"], "--i0"),
        (["plan-energies", "--time-budget", "-5"], "--time-budget"),
        (["plan-energies", "--n-points", "5", "--dwell", "0"], "--dwell"),
    ],
)
def test_out_of_range_options_refused_at_parse_time(argv, option, tmp_path, capsys) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
    assert not out.exists()


def test_polygon_with_x_is_a_conflict(tmp_path, capsys) -> None:
    out = tmp_path / "tiles.json"
    argv = ["plan-tiles", "--polygon", "0,0;1,0;1,1", "--x", "0:1", "--fov-px", "100,100", "--pixel-um", "10"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "--polygon and --x/--y" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*TILES[:-1], "0"], "argument --pixel-um: '0': expected a value in (0, inf]"),
        (["cluster", "stack.h5", "--window", "0"], "argument --window: '0': expected a value in [1, inf]"),
        (["cluster", "stack.h5", "--window", "4"], "argument --window: '4': expected an odd number"),
        (["cluster", "stack.h5", "--min-count", "0"], "argument --min-count: '0'"),
        (["cluster", "stack.h5", "--draws", "300"], "unrecognized arguments: --draws 300"),  # removed: unused
    ],
)
def test_bad_option_values_name_the_option(argv, message, tmp_path, capsys) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


PBSO4 = Path(__file__).parents[1] / "data" / "xrd" / "pbso4"


def _refine(pattern: Path, *extra: str | Path, out: Path) -> list[str]:
    return [
        "refine",
        str(pattern),
        "--cif",
        str(PBSO4 / "PbSO4-Wyckoff.cif"),
        "--out",
        str(out),
        *map(str, extra),
    ]


@pytest.mark.parametrize("command", ["cluster", "refine"])
def test_a_directory_given_for_an_input_file_is_named_as_such(command, tmp_path, capsys) -> None:
    folder = tmp_path / ("stack.h5" if command == "cluster" else "pattern.xy")
    folder.mkdir()
    out = tmp_path / "out.h5"
    argv = ["cluster", str(folder), "--out", str(out)] if command == "cluster" else _refine(folder, out=out)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{folder} is a directory; expected a file") and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("option", ["--strategy", "--design"])
def test_a_binary_text_input_is_named_with_the_bad_byte(option, tmp_path, capsys) -> None:
    binary = tmp_path / "input.json"
    binary.write_bytes(bytes(range(256)))
    out = tmp_path / "out.json"
    if option == "--strategy":
        argv = _refine(PBSO4 / "PBSO4.XRA", "--strategy", binary, out=out)
    else:
        argv = [*TILES, "--design", str(binary), "--out", str(out)]
    assert main(argv) == 2
    # byte 0x80 at offset 128 is the first that is not UTF-8 in bytes 0..255
    assert f"{binary} is not UTF-8 text (byte 0x80 at offset 128)" in capsys.readouterr().err
    assert not out.exists()


def test_an_output_under_a_regular_file_is_refused_before_the_design(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["plan-energies", "--n-points", "5", "--out", str(blocker / "sub" / "d.json")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write in {blocker / 'sub'}: {blocker} is a file, not a folder" in err
    assert "Traceback" not in err and blocker.read_text() == "x"
