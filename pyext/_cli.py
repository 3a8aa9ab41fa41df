"""Command-line helpers: every bad argument or unusable device is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import torch


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``prog: error: message``, and exit status 2
    (``--help`` still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog: str, message: object) -> int:
    """Prints ``prog: error: message`` (one line) on stderr and returns exit status 2."""
    text = " ".join(str(message).split())  # one line, whatever the exception's text held
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def resolve_device(name: str | None) -> torch.device:
    """The device a command runs on: ``name`` (cpu, cuda, cuda:N) or cuda when available.

    Raises ValueError naming --device when the string is no device or the device is unusable here."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
