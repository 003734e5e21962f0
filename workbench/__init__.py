"""Workbench for LLM-based sequential recommendation: one protocol, four methods, conventional baselines."""

__version__ = "0.1.0"
