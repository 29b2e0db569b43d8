"""``xbeam refine --auto``: result.json, the saved strategy replayed by ``--strategy``, warm start, bad input."""

from __future__ import annotations

import json

import pytest

from xbeam_bluesky.cli import main


@pytest.fixture
def inputs(data_dir):
    d = data_dir / "pbso4"
    return [
        str(d / "PBSO4.XRA"),
        "--cif",
        str(d / "PbSO4-Wyckoff.cif"),
        "--instrument",
        str(d / "INST_XRY.PRM"),
    ]


@pytest.mark.slow
def test_auto_then_replay_with_strategy_gives_the_same_rwp(inputs, tmp_path, capsys):
    out = tmp_path / "auto.json"
    args = ["refine", *inputs, "--range", "16:158.4", "--auto", "--trials", "3", "--jobs", "1", "--seed", "2"]
    assert main([*args, "--out", str(out), "--plot", str(tmp_path / "fit.png")]) == 0
    result = json.loads(out.read_text())
    for key in (
        "rwp",
        "rp",
        "gof",
        "phases",
        "n_points",
        "n_reflections",
        "wall_s",
        "strategy",
        "top",
        "spreads",
    ):
        assert key in result, key
    assert result["n_trials"] == 3 and result["auto"] is True
    assert result["n_failed"] == sum(not t["valid"] for t in result["trials"])
    assert result["rwp"] == pytest.approx(result["best_rwp"], rel=1e-9)
    assert result["top"][0]["rwp"] == pytest.approx(result["rwp"], rel=1e-9)
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
    strategy_file = tmp_path / "auto.strategy.json"
    assert result["strategy_file"] == str(strategy_file)
    printed = capsys.readouterr()
    assert "strategy search" in printed.err  # the progress bar
    assert f"--strategy {strategy_file}" in printed.out

    # the engine's own CLI replays the saved strategy exactly (no --range needed: every stage has its range)
    replay = tmp_path / "replay.json"
    assert main(["refine", *inputs, "--strategy", str(strategy_file), "--out", str(replay)]) == 0
    assert json.loads(replay.read_text())["rwp"] == pytest.approx(result["rwp"], rel=1e-9)

    # a later search warm-starts from the earlier result: its first trial is the earlier best
    again = tmp_path / "again.json"
    assert main([*args[:-4], "--trials", "1", "--warm-start", str(out), "--out", str(again)]) == 0
    first = json.loads(again.read_text())["trials"][0]
    assert first["warm_start"] and first["params"] == result["strategy"]["search"]["params"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "s.json"], "with --auto use --warm-start FILE"),
        (["--trials", "0"], "--trials 0: expected a positive integer"),
        (["--jobs", "0"], "--jobs 0: expected a positive integer"),
        (["--timeout-s", "-5"], "--timeout-s -5.0: expected a positive time in s"),
        (["--exclude", "zero,cell"], "--exclude 'zero,cell': search space: cannot exclude ['cell']"),
    ],
)
def test_bad_auto_arguments_are_named(inputs, tmp_path, capsys, extra, message):
    assert main(["refine", *inputs, "--auto", *extra, "--out", str(tmp_path / "r.json")]) == 2
    assert message in capsys.readouterr().err


def test_warm_start_file_without_search_block(inputs, tmp_path, capsys):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"stages": [{"refine": ["scale"]}]}))
    args = ["refine", *inputs, "--auto", "--warm-start", str(plain), "--out", str(tmp_path / "r.json")]
    assert main(args) == 2
    assert f"warm-start file {plain}: no 'search' block" in capsys.readouterr().err
