"""Batch-run numbered notebooks with papermill: `python -m workbench run [NOTEBOOK ...] --profile cpu -p KEY VALUE`.

Executed copies go to runs/<timestamp>/ with a run.json summary and their figures; results go to runs/scratch/.
`--refresh` (what `make run` does) remakes the committed outputs instead: figures/, results/ and the executed notebooks
written back into notebooks/ without noisy metadata, for the cpu profile's defaults only.  Parameters are checked
against each notebook's `parameters` cell first: a name that no selected notebook declares is refused before anything
runs.  Kernels always draw figures inline, whatever $MPLBACKEND the calling shell has.
"""
from __future__ import annotations

import ast
import difflib
import json
import os
import tempfile
import time
from pathlib import Path

import nbformat

from .. import config, outputs
from ..assets import atomic_write
from ..config import ConfigError, profile_name
from ..process import environment, git_commit

ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file: workbench/notebook/batch.py)
NOTEBOOKS = ROOT / "notebooks"


def list_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb), in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def nearest_notebook(name: str, available: list[Path]) -> str | None:
    """The stem a mistyped name most likely meant: one that contains it, else the closest spelling."""
    stems = [p.stem for p in available]
    inside = [s for s in stems if name.lower() in s.lower()]
    if len(inside) == 1:
        return inside[0]
    near = difflib.get_close_matches(name, inside or stems, n=1, cutoff=0.4)
    return near[0] if near else None


def select_notebooks(names, folder: Path = NOTEBOOKS) -> list[Path]:
    """Notebooks by number ('02'), stem ('02_baselines'), file name or path; all of them when names is empty."""
    available = list_notebooks(folder)
    if not names:
        return available
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            chosen.append(path.resolve())
            continue
        matches = [p for p in available if p.stem == name or p.name == name or p.stem.split("_")[0] == name]
        if len(matches) != 1:
            near = nearest_notebook(name, available)
            hint = f"did you mean {near}? " if near else ""
            raise ConfigError(f"no single notebook matches {name!r}: {hint}choose from "
                              f"{', '.join(p.stem for p in available)}")
        chosen.append(matches[0])
    return chosen


def parse_value(text: str):
    """A -p value as a Python literal where it is one (3, 0.1, True, [1, 2]), else the string itself; `None` stays
    the text "None", which the parameter table reads as None (a None value would mean "the profile's value" and be
    dropped: `-p LLM_TRAIN_SAMPLES None` must mean all samples)."""
    if text.strip() == "None":
        return "None"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def declared_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    import papermill
    return set(papermill.inspect_notebook(str(path)))


def check_parameters(paths, params: dict) -> dict[Path, dict]:
    """Split the parameters among the notebooks that declare them; a name none declares is an error."""
    declared = {p: declared_parameters(p) for p in paths}
    valid = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {', '.join(p.stem for p in paths)}; "
                          f"valid: {', '.join(sorted(valid))}")
    return {p: {k: v for k, v in params.items() if k in declared[p]} for p in paths}


def _final_frames(text: str) -> str:
    """Each line as a terminal shows it: only what follows its last carriage return (a progress bar's last frame)."""
    lines = text.split("\n")
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)


def _relative_paths(text: str) -> str:
    """Machine paths shown relative to the checkout, the cache as $WORKBENCH_CACHE and the home folder as ~."""
    from ..assets import cache_dir
    for path, short in ((str(ROOT) + "/", ""), (str(cache_dir()), "$WORKBENCH_CACHE"), (str(Path.home()), "~")):
        text = text.replace(path, short)
    return text


def clean_outputs(outputs: list) -> list:
    """Consecutive stream outputs merged, progress bars reduced to their last frame, machine paths shortened."""
    cleaned = []
    for out in outputs:
        if out.get("output_type") == "stream" and cleaned and cleaned[-1].get("output_type") == "stream" \
                and cleaned[-1]["name"] == out["name"]:
            cleaned[-1]["text"] += out["text"]
        else:
            cleaned.append(out)
    for out in cleaned:
        if out.get("output_type") == "stream":
            out["text"] = _relative_paths(_final_frames(out["text"]))
        elif "text/plain" in out.get("data", {}):
            out["data"]["text/plain"] = _relative_paths(out["data"]["text/plain"])
    return cleaned


KERNEL_DISPLAY_NAME = "Python 3 (ipykernel)"  # what ipykernel's own spec says: JupyterLab keeps it, not "modified"


def clean_notebook(nb):
    """Drop the injected-parameters cell and papermill/execution metadata; tidy outputs; renumber counts 1..n."""
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.metadata.pop("papermill", None)
    nb.metadata.get("kernelspec", {}).update({"name": "python3", "display_name": KERNEL_DISPLAY_NAME})
    count = 0
    for cell in nb.cells:
        for key in ("papermill", "execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if not cell.metadata.get("tags", True):
            cell.metadata.pop("tags")
        if cell.cell_type == "code":
            count += 1  # renumbered 1..n: nbval refuses outputs on a cell without a count
            cell.execution_count = count
            cell.outputs = clean_outputs(cell.outputs)
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
    return nb


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# the kernel's own log (e.g. "Kernel is running over TCP without encryption") is not the notebook's output
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


# what no committed output may show: warnings, the Trainer's notebook table, the kernel's TCP notice, library bars
NOISE = ("Warning:", "Training Loss", "IProgress", "without encryption", "Loading weights", "examples/s]")


def output_problems(cells) -> list[str]:
    """What a reader would see wrong in executed cells [(source, outputs)]: a cell that saves a figure
    (`plots.save(`) without an image, or a warning or progress table from the libraries in its output."""
    problems = []
    for source, outs in cells:
        first = source.strip().splitlines()[0][:60] if source.strip() else ""
        if "plots.save(" in source and not any("image/png" in o.get("data", {}) for o in outs):
            problems.append(f"no figure shown by the cell that saves one: {first!r}")
        text = output_text([(source, outs)])
        for word in NOISE:
            if word in text:
                problems.append(f"{word!r} in the output of {first!r}")
    return problems


def output_text(cells) -> str:
    """The text the outputs of cells [(source, outputs)] show (stream text, plain and HTML representations)."""
    return "".join(_shown(o) for _, outs in cells for o in outs)


def _shown(out) -> str:
    """The text one output shows."""
    if out.get("output_type") == "stream":
        text = out.get("text", "")
        return text if isinstance(text, str) else "".join(text)
    data = out.get("data", {})
    return "".join("".join(v) if isinstance(v, list) else str(v) for k, v in data.items() if k.startswith("text/"))


def notebook_cells(path: Path) -> list:
    """[(source, outputs)] of a saved notebook's code cells."""
    nb = nbformat.read(str(path), as_version=4)
    return [(c.source, c.get("outputs", [])) for c in nb.cells if c.cell_type == "code"]


def kernel_environment(out_dir: Path | None = None, refresh: bool = False) -> dict:
    """Environment variables for the notebook kernels: this checkout first on PYTHONPATH (not an installed copy),
    figures drawn inline (a non-inline $MPLBACKEND would leave the executed copies without images), and where
    outputs go: the committed folders when refreshing, else figures beside the executed copies in out_dir."""
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env = {"PYTHONPATH": os.pathsep.join(paths), "MPLBACKEND": INLINE_BACKEND,
           outputs.REFRESH_ENV: "1" if refresh else "0"}
    if not refresh and out_dir is not None and not os.environ.get("WORKBENCH_FIGURES"):
        env["WORKBENCH_FIGURES"] = str(Path(out_dir) / "figures")
    return env


def check_refresh(profile: str | None, params: dict) -> None:
    """The committed outputs are the cpu profile's defaults: refuse --refresh with another profile or overrides."""
    name = profile_name(profile)
    if name != "cpu" or params:
        given = [f"--profile {name}"] * (name != "cpu") + [f"-p {k} {v}" for k, v in params.items()]
        raise ConfigError(f"--refresh remakes the committed outputs, which are the cpu profile's defaults: drop "
                          f"{' '.join(given)} or --refresh (without it the run writes to runs/, never over them)")


def new_run_dir(root: Path | None = None) -> Path:
    """A fresh runs/<timestamp>-<suffix>/ folder; two runs started in the same second get different folders."""
    root = Path(root or ROOT / "runs")
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))


def write_record(out_dir: Path, profile: str, summary: list, status: str) -> Path:
    """runs/<...>/run.json, rewritten atomically after every notebook (and on an interruption)."""
    record = {"profile": profile, "status": status, "commit": git_commit(), "notebooks": summary}
    return atomic_write(out_dir / "run.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str)))


def run_notebooks(paths, profile: str | None = None, params: dict | None = None, out_dir: Path | None = None,
                  refresh: bool = False, keep_going: bool = False, progress: bool = True) -> list[dict]:
    """Execute each notebook with papermill; prints per-notebook time; raises RuntimeError naming the failing cell.

    refresh: write figures and results into the committed folders and each executed notebook back into its source.

    Parameters are checked (names against each notebook's parameters cell, values against their types and ranges)
    before any kernel starts; tuples are passed as lists (papermill has no tuple literal).
    """
    profile = profile_name(profile)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in (params or {}).items()}
    per_notebook = check_parameters(paths, params)
    config.resolve(profile, **{k: v for k, v in params.items() if k in config.PARAMS})  # types and ranges, now
    out_dir = Path(out_dir) if out_dir else new_run_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    with environment(kernel_environment(out_dir, refresh)):
        return _execute(paths, profile, per_notebook, out_dir, refresh, keep_going, progress)


def _execute(paths, profile, per_notebook, out_dir, refresh, keep_going, progress) -> list[dict]:
    """run_notebooks' loop: each notebook in turn, its record kept up to date in run.json."""
    import papermill
    summary, failures = [], []
    try:
        for i, path in enumerate(paths, 1):
            output = out_dir / path.name
            print(f"[{i}/{len(paths)}] {path.stem} (profile {profile}) -> {output}", flush=True)
            start = time.time()
            record = {"notebook": path.name, "output": str(output), "parameters": per_notebook[path],
                      "profile": profile, "status": "running"}
            summary.append(record)
            write_record(out_dir, profile, summary, "running")
            try:
                papermill.execute_notebook(str(path), str(output), parameters={"PROFILE": profile, **per_notebook[path]},
                                           cwd=str(path.parent), progress_bar=progress, kernel_name="python3",
                                           extra_arguments=KERNEL_ARGUMENTS)
                record["status"] = "ok"
            except papermill.PapermillExecutionError as err:
                record.update(status="failed", cell=err.exec_count, error=f"{err.ename}: {err.evalue}")
                failures.append(f"{path.name} failed at cell [{err.exec_count}] with {err.ename}: "
                                f"{err.evalue.splitlines()[0] if err.evalue else ''} (traceback in {output})")
            record["seconds"] = round(time.time() - start, 1)
            print(f"    {record['status']} in {record['seconds']:.0f} s", flush=True)
            if record["status"] == "ok" and refresh:
                nbformat.write(clean_notebook(nbformat.read(output, as_version=4)), str(path))
            if failures and not keep_going:
                break
    except BaseException:
        for record in summary:
            if record["status"] == "running":
                record["status"] = "interrupted"
        write_record(out_dir, profile, summary, "interrupted")
        raise
    write_record(out_dir, profile, summary, "failed" if failures else "ok")
    if failures:
        raise RuntimeError("; ".join(failures))
    return summary
