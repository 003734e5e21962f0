"""The committed notebooks are what a reader opens: executed at one commit, every figure inline, no noise or paths.

They are made by `make run` (`python -m workbench run --refresh`); this checks the copies in git, not a fresh run.
"""
import re

import nbformat
import pytest

from workbench.notebook import batch

NOTEBOOKS = batch.list_notebooks()
MACHINE_PATHS = re.compile(r"(/work/|/root/|/home/|/tmp/|/usr/)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_committed_notebook_shows_every_figure_and_no_noise(path):
    assert batch.output_problems(batch.notebook_cells(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_committed_notebook_names_the_kernel_jupyterlab_starts_and_no_machine_path(path):
    nb = nbformat.read(str(path), as_version=4)
    assert nb.metadata.kernelspec.display_name == batch.KERNEL_DISPLAY_NAME  # else opening it marks it modified
    assert nb.metadata.kernelspec.name == "python3"
    text = batch.output_text(batch.notebook_cells(path))
    assert not MACHINE_PATHS.findall(text)


def test_the_committed_notebooks_come_from_one_run_at_one_clean_commit():
    commits = set()
    for path in NOTEBOOKS:
        text = batch.output_text(batch.notebook_cells(path))
        commits |= set(re.findall(r"commit=(\S+)", text))
    assert len(commits) == 1 and "+dirty" not in next(iter(commits)), commits
