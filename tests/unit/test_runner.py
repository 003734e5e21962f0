"""The papermill runner and CLI: selection, parameter checks, failure reports, cleaned outputs."""
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workbench.notebook import batch
from workbench.__main__ import main
from workbench.config import ConfigError


def _notebook(path, body, params="PROFILE = None\nSEED = None"):
    nb = new_notebook()
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_select_by_number_stem_or_name():
    by_number = batch.select_notebooks(["02"])
    assert [p.stem for p in by_number] == ["02_baselines"]
    assert batch.select_notebooks(["02_baselines.ipynb"]) == by_number
    assert len(batch.select_notebooks([])) >= 3
    with pytest.raises(ConfigError, match="choose from 00_quickstart"):
        batch.select_notebooks(["99"])


def test_parse_value():
    assert batch.parse_value("3") == 3 and batch.parse_value("None") == "None"
    assert batch.parse_value("0.5") == 0.5 and batch.parse_value("sasrec") == "sasrec"


def test_unknown_parameter_is_refused_before_running(tmp_path):
    nb = _notebook(tmp_path / "01_x.ipynb", "raise SystemExit('must not run')")
    with pytest.raises(ConfigError, match="unknown parameter.*SEEED.*valid: PROFILE, SEED"):
        batch.run_notebooks([nb], "smoke", {"SEEED": 1}, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "01_x.ipynb").exists()


def test_failure_names_the_cell_and_the_error(tmp_path):
    nb = _notebook(tmp_path / "01_fail.ipynb", "x = 1\nraise ValueError('bad input here')")
    # [3]: the execution count in the executed copy, where papermill has injected a parameters cell
    with pytest.raises(RuntimeError, match=r"01_fail.ipynb failed at cell \[3\] with ValueError: bad input here"):
        batch.run_notebooks([nb], "smoke", {"SEED": 4}, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "run.json").exists()


def test_success_saves_clean_outputs(tmp_path):
    nb = _notebook(tmp_path / "01_ok.ipynb", "print('seed', SEED, PROFILE)")
    summary = batch.run_notebooks([nb], "smoke", {"SEED": 4}, tmp_path / "out", refresh=True, progress=False)
    assert summary[0]["status"] == "ok"
    saved = nbformat.read(str(nb), as_version=4)
    assert len(saved.cells) == 2 and "papermill" not in saved.metadata  # injected cell and metadata dropped
    assert saved.cells[1].outputs[0]["text"].strip() == "seed 4 smoke"
    assert [c.execution_count for c in saved.cells] == [1, 2]


def test_cli_errors_are_one_line(capsys):
    assert main(["run", "02", "--profile", "laptop"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown profile 'laptop'" in err
    assert main(["run", "02", "-p", "NOT_A_PARAM", "1"]) == 2
    assert "NOT_A_PARAM" in capsys.readouterr().err


def test_tuples_and_lists_reach_the_notebook_as_lists(tmp_path):
    nb = _notebook(tmp_path / "01_seeds.ipynb", "assert ABLATION_SEEDS == [0, 1], repr(ABLATION_SEEDS)",
                   params="PROFILE = None\nABLATION_SEEDS = None")
    batch.run_notebooks([nb], "smoke", {"ABLATION_SEEDS": batch.parse_value("(0, 1)")}, tmp_path / "out",
                         progress=False)


def test_bad_values_are_refused_before_a_kernel_starts(tmp_path):
    nb = _notebook(tmp_path / "01_x.ipynb", "raise SystemExit('must not run')", params="PROFILE = None\nEPOCHS = None")
    with pytest.raises(ConfigError, match="EPOCHS must be int >= 1, got 0"):
        batch.run_notebooks([nb], "smoke", {"EPOCHS": 0}, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "01_x.ipynb").exists()


def test_a_notebook_that_does_not_use_a_parameter_refuses_it():
    with pytest.raises(ConfigError, match="unknown parameter.*SEED.*04_ablation"):
        batch.check_parameters(batch.select_notebooks(["04"]), {"SEED": 1})  # arms use ABLATION_SEEDS


def test_the_kernel_imports_this_checkout_not_another_copy(tmp_path, monkeypatch):
    fake = tmp_path / "elsewhere" / "workbench"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("FAKE = True\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    nb = _notebook(tmp_path / "01_where.ipynb", "import workbench\nassert not hasattr(workbench, 'FAKE'), "
                   "workbench.__file__\nprint(workbench.__file__)")
    batch.run_notebooks([nb], "smoke", {}, tmp_path / "out", progress=False)
    out = nbformat.read(str(tmp_path / "out" / "01_where.ipynb"), as_version=4)
    assert out.cells[-1].outputs[0]["text"].strip() == str(batch.ROOT / "workbench" / "__init__.py")


def test_run_records_survive_an_interruption_and_never_share_a_folder(tmp_path, monkeypatch):
    import json
    import papermill

    first, second = batch.new_run_dir(tmp_path), batch.new_run_dir(tmp_path)
    assert first != second  # two runs started in the same second

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    nb = _notebook(tmp_path / "01_ok.ipynb", "print(1)")
    with pytest.raises(KeyboardInterrupt):
        batch.run_notebooks([nb], "smoke", {}, first, progress=False)
    record = json.loads((first / "run.json").read_text())
    assert record["status"] == "interrupted" and record["notebooks"][0]["status"] == "interrupted"


def test_cli_turns_every_error_into_one_line(capsys, monkeypatch):
    from workbench import __main__ as cli

    def boom(args):
        raise ValueError("n_negatives must be >= 1\nsecond line")

    def ctrl_c(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_params", boom)
    assert main(["params"]) == 2
    assert capsys.readouterr().err.strip() == "workbench params: error: n_negatives must be >= 1"
    monkeypatch.setattr(cli, "_params", ctrl_c)
    assert main(["params"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted" in err
    assert main(["prepare", "--n-negatives", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "N_NEGATIVES must be int >= 1" in err


def test_saved_outputs_show_the_last_progress_frame_and_no_machine_paths():
    outputs = [{"output_type": "stream", "name": "stderr", "text": "\rfit:  50%|#  | 1/2"},
               {"output_type": "stream", "name": "stderr", "text": "\rfit: 100%|## | 2/2\n"},
               {"output_type": "stream", "name": "stdout", "text": f"saved {batch.ROOT}/results/x/metrics.json\n"}]
    cleaned = batch.clean_outputs(outputs)
    assert [o["text"] for o in cleaned] == ["fit: 100%|## | 2/2\n", "saved results/x/metrics.json\n"]
