"""Argument types shared by the component commands."""

from __future__ import annotations

import argparse


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
