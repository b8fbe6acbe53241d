"""Command-line numbers checked where they are parsed: every CLI's integers and floats go through
these typed range validators, so `--epochs 0`, `--count -5` or `--fps inf` stop at argparse with
one line, before any work starts.

    p.add_argument("--epochs", type=int_range(1), default=40)
    p.add_argument("--threshold", type=float_range(0, 1, inclusive=False), default=0.5)
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn, Optional


def int_range(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse `type` accepting integers in [low, high] (either bound may be open-ended)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_bounds(low, high, True)}, not {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(low: Optional[float] = None, high: Optional[float] = None, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse `type` accepting finite floats in [low, high] (or (low, high) if not inclusive)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        too_low = low is not None and (value < low if inclusive else value <= low)
        too_high = high is not None and (value > high if inclusive else value >= high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {_bounds(low, high, inclusive)}, not {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def _bounds(low, high, inclusive: bool) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}" + ("" if inclusive else " (exclusive)")
    if low is not None:
        return f"{'>=' if inclusive else '>'} {low:g}"
    return f"{'<=' if inclusive else '<'} {high:g}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error style: one `error: ...` line (no usage dump), exit code 2.

    Subparsers made by `add_subparsers` inherit this class.
    """

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)
