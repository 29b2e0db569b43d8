"""Input files checked the same way everywhere: a missing file, a directory or a binary file is named as such."""

from __future__ import annotations

from pathlib import Path

from xbeam_bluesky.errors import InputFileError


def input_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`, after checking that it is an existing regular file.

    Parameters
    ----------
    path
        The file the user named.
    what
        What the file should be, for the message (e.g. ``"pattern file"``).

    Raises
    ------
    InputFileError
        ``"{what} not found: {path}"`` or ``"{what} {path} is a directory; expected a file"``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputFileError(f"{what} {p} is a directory; expected a file")
    if not p.is_file():
        raise InputFileError(f"{what} not found: {p}")
    return p


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of the input file ``path`` (checked with :func:`input_file`).

    Raises
    ------
    InputFileError
        As :func:`input_file`; or the file cannot be read, or is not UTF-8 text (e.g. a binary file).
    """
    p = input_file(path, what)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{what} {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "expected a text file"
        ) from None
    except OSError as exc:
        raise InputFileError(f"{what} {p} cannot be read ({exc.strerror or exc})") from None
