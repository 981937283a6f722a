"""argparse ``type=`` checks shared by the commands; argparse puts the option's name
in front of the message and exits with status 2."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


# Longest --interval accepted: a day. Beyond it (inf, 1e308) no timer can wait that
# long, and nobody means it.
MAX_INTERVAL = 86400.0


def interval(text: str) -> float:
    """Seconds between two looks: positive and at most MAX_INTERVAL."""
    value = positive_float(text)
    if value > MAX_INTERVAL:
        raise argparse.ArgumentTypeError(f"at most {MAX_INTERVAL:g} seconds (a day): {text!r}")
    return value
