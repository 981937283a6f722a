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


# poll() takes milliseconds in a C int: the longest wait it can express.
MAX_SECONDS = 2_147_483


def seconds(text: str) -> float:
    """A timeout: more than 0, finite, at most MAX_SECONDS (refuses nan, inf, -1)."""
    value = positive_float(text)
    if not value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SECONDS} seconds: {text!r}")
    return value


def seconds_or_zero(text: str) -> float:
    """A wait that may be 0 (do not wait), else as `seconds`."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return seconds(text)


# Longest --interval accepted: a day. Beyond it (inf, 1e308) no timer can wait that
# long, and nobody means it.
MAX_INTERVAL = 86400.0


def interval(text: str) -> float:
    """Seconds between two looks: positive and at most MAX_INTERVAL."""
    value = positive_float(text)
    if value > MAX_INTERVAL:
        raise argparse.ArgumentTypeError(f"at most {MAX_INTERVAL:g} seconds (a day): {text!r}")
    return value
