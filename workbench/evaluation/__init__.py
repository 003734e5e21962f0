"""Evaluation across methods, from saved runs only: `comparison.py` (every registered entry on common users, the
same-user comparison a notebook shows, ablation summaries) and `report.py` (results/REPORT.md and the README block)."""
