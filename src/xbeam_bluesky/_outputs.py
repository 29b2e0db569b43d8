"""Output files that never overwrite an input, are checked before the work starts, and appear atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from xbeam_bluesky.errors import OutputPathError


def check_output(out: str | Path, inputs: Iterable[str | Path] = (), option: str = "--out") -> Path:
    """Check, before any work, that ``out`` can be written and is none of ``inputs``.

    The folder is created if missing (as the commands always did) and a probe file is written in it.

    Raises
    ------
    OutputPathError
        Naming the option and the path: ``out`` is an input (same file, also through a link), a directory,
        under a regular file, or its folder cannot be created or written.
    """
    out = Path(out).expanduser()
    for source in inputs:
        source = Path(source).expanduser()
        if out.resolve() == source.resolve() or (
            out.exists() and source.exists() and os.path.samefile(out, source)
        ):
            raise OutputPathError(
                f"{option} {out} is the input {source}; it would be overwritten. Pick another file"
            )
    if out.is_dir():
        raise OutputPathError(f"{option} {out} is a directory; expected a file name")
    blocking = next((a for a in out.parents if a.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise OutputPathError(
            f"{option} {out}: cannot write in {out.parent}: {blocking} is a file, not a folder"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"{option} {out}: cannot write in {out.parent} ({exc.strerror or exc})"
        ) from None
    return out


@contextlib.contextmanager
def atomic_output(out: str | Path) -> Iterator[Path]:
    """A temporary path in ``out``'s folder to write to; renamed onto ``out`` only if the block succeeds.

    A crash or an exception leaves ``out`` as it was (the temporary file is removed).
    """
    out = Path(out)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
