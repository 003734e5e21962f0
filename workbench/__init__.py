"""Workbench for LLM-based sequential recommendation: one protocol, four methods, conventional baselines.

Layers, each importing only from those before it (tests/unit/test_structure.py): the foundation (config, assets,
outputs, quiet, process, metrics, results, recommender) -> data/ -> llm/ (the shared LLM core) -> methods/ (one
folder per method) -> evaluation/ (comparison, report) -> notebook/ (session, plots, batch runner) -> the CLI.
"""

__version__ = "0.1.0"

from . import quiet as _quiet

_quiet.install()  # third-party noise filtered before any library that makes it is imported

from . import methods as _methods  # noqa: E402,F401  (declares every method and its parameters: light)


def start(namespace: dict, quiet: bool = False) -> dict:
    """A notebook's setup cell: `cfg = workbench.start(globals())` (see workbench/notebook/session.py)."""
    from .notebook.session import start as _start
    return _start(namespace, quiet)
