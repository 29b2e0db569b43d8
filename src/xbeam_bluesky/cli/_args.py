"""argparse ``type`` functions that refuse an out-of-range number naming the option (argparse adds its name)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(
    kind: type, low: float, high: float = math.inf, *, low_open: bool = False, odd: bool = False
) -> Callable[[str], float | int]:
    """An argparse ``type`` accepting a finite ``kind`` (int or float) in [low, high] (or (low, high] with
    ``low_open``), odd if ``odd``; argparse reports a refusal as ``argument --OPTION: ...`` (exit 2)."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'}"
            ) from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
        if not ok:
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text!r}: expected a value in {bracket}{low:g}, {high:g}]")
        if odd and value % 2 == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an odd number")
        return value

    return parse
