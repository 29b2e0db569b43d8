"""Issue 17, data lost 2 and 3: outputs never overwrite an input, are checked first, and appear atomically."""

from __future__ import annotations

import pytest

from xbeam_bluesky._outputs import atomic_output, check_output
from xbeam_bluesky.errors import OutputPathError


def test_output_equal_to_an_input_is_refused(tmp_path) -> None:
    source = tmp_path / "stack.h5"
    source.write_bytes(b"measurement")
    (tmp_path / "link.h5").symlink_to(source)
    for out in (source, tmp_path / "." / "stack.h5", tmp_path / "link.h5"):
        with pytest.raises(OutputPathError, match="is the input"):
            check_output(out, [source])
    assert source.read_bytes() == b"measurement"


def test_impossible_outputs_are_refused_before_work(tmp_path) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    with pytest.raises(OutputPathError, match="cannot write"):
        check_output(regular / "out.json")  # a folder under a regular file
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output(tmp_path)
    assert check_output(tmp_path / "new" / "out.json").parent.is_dir()  # a missing folder is created


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path) -> None:
    out = tmp_path / "result.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert out.read_text() == "old" and list(tmp_path.iterdir()) == [out]
    with atomic_output(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and list(tmp_path.iterdir()) == [out]


def test_cluster_out_equal_to_input_refused_and_input_intact(tmp_path, capsys) -> None:
    import h5py
    import numpy as np

    from xbeam_bluesky.cli import main

    stack = tmp_path / "stack.h5"
    with h5py.File(stack, "w") as f:
        f["stack"] = np.ones((3, 4, 4))
        f["energy"] = [7100.0, 7112.0, 7130.0]
    before = stack.read_bytes()
    assert main(["cluster", str(stack), "--out", str(stack)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert stack.read_bytes() == before


def test_refine_out_equal_to_pattern_refused_before_refining(tmp_path, capsys) -> None:
    import shutil
    from pathlib import Path

    from xbeam_bluesky.cli import main

    data = Path(__file__).parents[1] / "data" / "xrd" / "pbso4"
    pattern = tmp_path / "PBSO4.XRA"
    shutil.copy(data / "PBSO4.XRA", pattern)
    before = pattern.read_bytes()
    argv = [
        "refine",
        str(pattern),
        "--cif",
        str(data / "PbSO4-Wyckoff.cif"),
        "--instrument",
        str(data / "INST_XRY.PRM"),
    ]
    assert main([*argv, "--out", str(pattern)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert pattern.read_bytes() == before
    assert main([*argv, "--out", str(pattern / "r.json")]) == 2  # a folder under a regular file
    assert "cannot write" in capsys.readouterr().err
