"""Issue 16 item 4: the user-error family, and the ``xbeam`` command telling user errors from bugs."""

from __future__ import annotations

import inspect

import pytest

import xbeam_bluesky.cli.planning as cli_planning
from xbeam_bluesky import errors
from xbeam_bluesky._inputs import input_file, read_text
from xbeam_bluesky.cli import BUG_REPORT, main
from xbeam_bluesky.clustering import AbsorberInputError, DenoiseInputError, SplitInputError
from xbeam_bluesky.planning import MapDesignError, TooFewClustersError
from xbeam_bluesky.spectra import SpectrumFormatError, StackFormatError

TILES = ["plan-tiles", "--x", "0:1", "--y", "0:1", "--fov-px", "100,100", "--pixel-um", "10", "--out"]


def test_every_user_error_is_an_xbeam_input_error_and_a_value_error() -> None:
    family = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    area = [AbsorberInputError, DenoiseInputError, SplitInputError, MapDesignError, TooFewClustersError]
    assert len(family) == 13
    for cls in [*family, *area]:
        assert issubclass(cls, errors.XbeamInputError) and issubclass(cls, ValueError), cls
    # the readers' classes are the family's, wherever they are imported from
    assert SpectrumFormatError is errors.SpectrumFormatError and StackFormatError is errors.StackFormatError
    assert issubclass(errors.InputFileError, FileNotFoundError)
    assert issubclass(errors.CifError, errors.RietveldInputError)


def test_input_files_are_named_when_missing_a_directory_or_not_text(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=f"^design file not found: {tmp_path / 'nope.json'}$"):
        input_file(tmp_path / "nope.json", "design file")
    with pytest.raises(
        errors.InputFileError, match=f"^design file {tmp_path} is a directory; expected a file$"
    ):
        input_file(tmp_path, "design file")
    latin = tmp_path / "latin.txt"
    text = "Fe₂O₃ at 7112 eV\n".encode()  # UTF-8, then one latin-1 byte: the first that is not UTF-8
    latin.write_bytes(text + "caf\xe9".encode("latin-1"))
    with pytest.raises(
        errors.InputFileError, match=rf"latin.txt is not UTF-8 text \(byte 0xe9 at offset {len(text) + 3}\)"
    ):
        read_text(latin, "library note")
    good = tmp_path / "good.txt"
    good.write_text("Fe₂O₃\n", encoding="utf-8")
    assert read_text(good, "note") == "Fe₂O₃\n" and input_file(good, "note") == good


def _replace_plan_tiles(monkeypatch, exc: BaseException) -> None:
    def handler(args):
        raise exc

    monkeypatch.setattr(cli_planning, "plan_tiles", handler)


def test_cli_prints_a_user_error_as_one_line_with_exit_2(monkeypatch, tmp_path, capsys) -> None:
    _replace_plan_tiles(monkeypatch, errors.DesignInputError("--x 0:1: the stage cannot reach it"))
    assert main([*TILES, str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err == "xbeam plan-tiles: error: --x 0:1: the stage cannot reach it\n"


@pytest.mark.parametrize("exc", [ValueError("bad shape (3,) in an internal step"), KeyError("energies")])
def test_cli_shows_any_other_exception_as_a_bug_with_its_traceback(
    exc, monkeypatch, tmp_path, capsys
) -> None:
    _replace_plan_tiles(monkeypatch, exc)
    assert main([*TILES, str(tmp_path / "t.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert f"{type(exc).__name__}: {exc}" in err and "in handler" in err
    assert err.rstrip().endswith(f"xbeam plan-tiles: {BUG_REPORT}") and "please report it" in BUG_REPORT
