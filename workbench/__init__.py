"""Workbench for LLM-based sequential recommendation: one protocol, four methods, conventional baselines."""

__version__ = "0.1.0"

from . import quiet as _quiet

_quiet.install()  # third-party noise filtered before any library that makes it is imported


def start(namespace: dict, quiet: bool = False) -> dict:
    """A notebook's setup cell: `cfg = workbench.start(globals())` (see workbench/session.py)."""
    from .session import start as _start
    return _start(namespace, quiet)
