"""`start(globals())`: the one setup cell of every notebook.

Resolves and checks the parameters cell (plus anything papermill injected), seeds everything, picks the device and
CPU threads, sets the plot style, prints versions and the parameters, and checks that the kernel imports the
workbench of the checkout the notebook lives in.  Safe to re-run in JupyterLab.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .. import config, process
from . import plots


class CheckoutError(RuntimeError):
    """The notebook belongs to one checkout but the kernel imported the workbench of another."""


def check_checkout(cwd: Path | None = None) -> None:
    """Refuse to run a notebook of checkout A with the workbench package of checkout B."""
    cwd = Path(cwd or Path.cwd()).resolve()
    here = Path(__file__).resolve().parents[1]  # the imported workbench package (this file: notebook/session.py)
    for folder in (cwd, *cwd.parents[:2]):
        local = folder / "workbench" / "__init__.py"
        if local.exists() and (folder / "notebooks").is_dir():
            if local.parent.resolve() != here:
                raise CheckoutError(f"this notebook's checkout is {folder} but the kernel imported workbench from "
                                    f"{here.parent}: run it with `python -m workbench run` from {folder}, or "
                                    f"`pip install -e {folder}` in this kernel's environment")
            return


def start(namespace: dict, quiet: bool = False) -> dict:
    """The notebook's resolved parameters (cfg; cfg['DEVICE'] is the device in use); raises on any bad parameter."""
    check_checkout()
    warnings.filterwarnings("ignore", category=UserWarning)
    given = config.notebook_values(namespace)  # a name that is not a parameter is refused, named, by resolve
    cfg = config.resolve(given.get("PROFILE"), **{k: v for k, v in given.items() if k != "PROFILE"})
    declared = [k for k in given if k != "PROFILE"]
    stale = [k for k, v in config.notebook_parameters(namespace).items()
             if k in config.PARAMS and k not in given and v is not None]  # left in the kernel by an earlier run
    process.seed_everything(cfg["SEED"])
    cfg["DEVICE"] = process.pick_device(cfg["DEVICE"])
    threads = process.set_threads(cfg["NUM_THREADS"])
    commit = process.git_commit()
    plots.setup(cfg, commit)
    if not quiet:
        print({k: v for k, v in process.versions().items() if v})
        print(f"profile={cfg['PROFILE']} device={cfg['DEVICE']} threads={threads} commit={commit}")
        print(config.format_parameters(cfg, declared))
    if stale:
        print(f"note: {', '.join(stale)} set in the kernel but not in the parameters cell: the profile's value is "
              f"used (set it in the parameters cell to change it)")
    return cfg
