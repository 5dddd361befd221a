"""Command-line subcommands of pyksm.analysis (registered by pyksm.cli)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to the top-level parser."""
