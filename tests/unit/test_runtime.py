"""Provenance: a notebook edit marks results dirty; re-written outputs do not."""
import json
import subprocess

from workbench import process


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _notebook(source: str, output: str) -> str:
    cell = {"cell_type": "code", "source": source, "metadata": {}, "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": output}]}
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def test_notebook_edits_are_code_changes_and_new_outputs_are_not(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "notebooks").mkdir()
    nb = tmp_path / "notebooks" / "00_x.ipynb"
    nb.write_text(_notebook("print(1)", "1\n"))
    (tmp_path / "notes.md").write_text("prose")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert not process.code_changed(tmp_path)
    nb.write_text(_notebook("print(1)", "1 (re-run)\n"))  # a run re-wrote the outputs
    (tmp_path / "notes.md").write_text("more prose")
    assert not process.code_changed(tmp_path)
    nb.write_text(_notebook("print(2)", "2\n"))  # an edited cell: the notebook's code changed
    assert process.code_changed(tmp_path)
    first = process.git_commit(tmp_path)
    assert "+dirty-" in first and process.is_dirty(first)
    nb.write_text(_notebook("print(3)", "3\n"))  # another edit: another key (issue 20: a dirty tree shared one)
    process.git_commit.cache_clear()
    second = process.git_commit(tmp_path)
    assert "+dirty-" in second and second != first
    nb.write_text(_notebook("print(2)", "2 (re-run)\n"))  # the first edit again, other outputs: the first key
    process.git_commit.cache_clear()
    assert process.git_commit(tmp_path) == first
    process.git_commit.cache_clear()


def test_a_new_untracked_module_is_a_code_change(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "workbench").mkdir()
    (tmp_path / "workbench" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert not process.code_changed(tmp_path)
    (tmp_path / "workbench" / "b.py").write_text("y = 2\n")
    assert process.code_changed(tmp_path)
    (tmp_path / "workbench" / "b.py").unlink()
    (tmp_path / "scratch.txt").write_text("not code")  # outside the package and notebooks: not code
    assert not process.code_changed(tmp_path)


def test_the_llm_core_sets_the_openmp_wait_policy_at_import_and_the_baselines_do_not():
    """OMP_WAIT_POLICY is read once, at OpenMP's start: the LLM core sets it when imported (before any of its torch
    ops), not when fit first sets the threads; a baselines-only process keeps OpenMP's default."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, workbench; from workbench.recommender import get_method; get_method('sasrec'); "
            "a = os.environ.get('OMP_WAIT_POLICY'); import workbench.llm; print(a, os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "PASSIVE"]
