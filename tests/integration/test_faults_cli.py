"""Issue 17: bad CLI options refused at parse time, naming the option (nothing computed or written)."""

from __future__ import annotations

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
