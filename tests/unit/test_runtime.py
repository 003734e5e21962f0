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
    assert process.git_commit(tmp_path).endswith("+dirty")


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
