"""Command line: `python -m workbench {assets,prepare,run,train,report,gpu-check,params}`; errors print one line that says what to do."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .assets import AssetError


def _assets(args) -> None:
    from . import assets
    for name, path in assets.fetch_all(args.only).items():
        print(f"{name}: {path}")
    if not args.only or "smollm2-135m" in args.only:
        from .llm.loading import smollm2_folder
        print(f"smollm2-135m (Hugging Face folder): {smollm2_folder()}")


def _prepare(args) -> None:
    from . import config
    from .data import load_dataset
    from .data.splits import prepare
    cfg = config.resolve(args.profile, DATASET=args.dataset, DATA_PATH=args.data_path, CANDIDATE_SEED=args.seed,
                         TIE_BREAK=args.tie_break, N_NEGATIVES=args.n_negatives,
                         MIN_INTERACTIONS=args.min_interactions)
    data = load_dataset(cfg["DATASET"], cfg["DATA_PATH"])
    prep = prepare(data, cfg["CANDIDATE_SEED"], cfg["N_NEGATIVES"], cfg["MIN_INTERACTIONS"], cfg["TIE_BREAK"],
                   force=args.force)
    m = prep.manifest
    print(f"{data.summary()}")
    if m["dropped_users"]:
        print(f"dropped {m['dropped_users']} of {m['users'] + m['dropped_users']} users with fewer than "
              f"{m['min_interactions']} interactions")
    print(f"fingerprint {m['fingerprint']}, tie_break {m['tie_break']}, candidate seed {m['candidate_seed']}, "
          f"{m['n_negatives']} negatives, {m['users']} users")
    print(f"candidates {'reused from' if prep.reused else 'written to'} {prep.folder}")


def _run(args) -> None:
    from .notebook import batch
    paths = batch.select_notebooks(args.notebooks)
    params = {key: batch.parse_value(value) for key, value in args.param or []}
    if args.refresh:
        batch.check_refresh(args.profile, params)
    summary = batch.run_notebooks(paths, args.profile, params, args.output_dir, args.refresh, args.keep_going)
    total = sum(r["seconds"] for r in summary)
    print(f"all {len(summary)} notebook(s) ran in {total:.0f} s")


def _train(args) -> None:
    from . import config, distributed
    from .notebook import batch
    params = {key: batch.parse_value(value) for key, value in args.param or []}
    profile = params.pop("PROFILE", None)
    if profile is not None and args.profile is not None and profile != args.profile:
        raise ValueError(f"--profile {args.profile} and -p PROFILE {profile} disagree: give one")
    cfg = config.resolve(args.profile or profile, **params)
    rec, log = distributed.train_method(args.method, cfg)
    if distributed.is_main_process():
        last = f", last loss {log['loss'].iloc[-1]:.4f}" if len(log) else ""
        print(f"{rec.name}: {len(log)} logged step(s) on {distributed.world_size()} process(es){last}")
        print(f"adapter: {rec.adapter}")


def _report(args) -> None:
    from . import config, outputs
    from .evaluation import report
    from .notebook import batch
    if args.refresh:
        os.environ[outputs.REFRESH_ENV] = "1"
    params = {key: batch.parse_value(value) for key, value in args.param or []}
    path, missing = report.write_report(config.resolve(args.profile, **params), args.readme)
    print(f"report written to {path}" + (f" and into {args.readme}" if args.readme else ""))
    for label, cmd in missing.items():
        print(f"missing: {label} (make it with `{cmd}`)")


def _gpu_check(args) -> None:
    from .gpucheck import GpuCheck, run
    run(GpuCheck(budget_minutes=args.budget_minutes, force=args.force, estimate_only=args.estimate_only,
                 notebooks=args.notebooks, benchmark=not args.no_benchmark, mfu=args.mfu))


def _params(args) -> None:
    from . import config
    print(config.describe_all(config.profile_name(args.profile)))


# Error classes the CLI reports as one line, with their exit codes (anything else: exit 1, one line, the type named).
USAGE_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError)


def report_error(command: str, err: BaseException) -> int:
    """Print one line for an error and return the exit code: 130 interrupted, 2 bad input, 1 anything else."""
    if isinstance(err, KeyboardInterrupt):
        print(f"workbench {command}: interrupted; finished work (candidates, checkpoints, saved runs) is kept, "
              f"re-run the same command to resume", file=sys.stderr)
        return 130
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, KeyError):
        text = text.strip("'\"")
    if isinstance(err, USAGE_ERRORS + (AssetError,)):
        print(f"workbench {command}: error: {text}", file=sys.stderr)
        return 2
    print(f"workbench {command}: error ({type(err).__name__}): {text} (set WORKBENCH_DEBUG=1 for the traceback)",
          file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """Entry point for `python -m workbench` and the `workbench` script."""
    from .config import PROFILES
    profile_help = f"{' | '.join(PROFILES)} (default: $WORKBENCH_PROFILE or cpu)"
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assets", help="fetch and verify the offline assets (data and model)")
    a.add_argument("--only", nargs="+", default=None, help="asset names (default: all)")
    a.set_defaults(func=_assets)
    p = sub.add_parser("prepare", help="write the fixed candidate files (valid and test)")
    p.add_argument("--profile", default=None)
    p.add_argument("--dataset", default=None, help="ml-100k (packaged), or ml-1m, mind, amazon (need --data-path)")
    p.add_argument("--data-path", default=None, help="folder with the official GroupLens files")
    p.add_argument("--seed", type=int, default=None, help="candidate seed (CANDIDATE_SEED)")
    p.add_argument("--n-negatives", type=int, default=None)
    p.add_argument("--min-interactions", type=int, default=None)
    p.add_argument("--tie-break", default=None, help="file_order (default) or item_id")
    p.add_argument("--force", action="store_true", help="regenerate even if the files exist")
    p.set_defaults(func=_prepare)
    r = sub.add_parser("run", help="execute notebooks with papermill")
    r.add_argument("notebooks", nargs="*", help="numbers (02), stems (02_baselines) or paths; default: all")
    r.add_argument("--profile", default=None, help=profile_help)
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="override a parameter")
    r.add_argument("--output-dir", default=None, help="where executed copies go (default runs/<timestamp>-<id>)")
    r.add_argument("--refresh", action="store_true", help="remake the committed outputs (make run): figures/, "
                   "results/ and the executed notebooks written back into notebooks/; cpu profile defaults only")
    r.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    r.set_defaults(func=_run)
    t = sub.add_parser("train", help="fine-tune an LLM method (fit only); also under `accelerate launch`")
    t.add_argument("method", help="an LLM method, e.g. mkv")
    t.add_argument("--profile", default=None, help=profile_help)
    t.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="override a parameter")
    t.set_defaults(func=_train)
    rp = sub.add_parser("report", help="write results/REPORT.md (every method on one table) from the saved runs")
    rp.add_argument("--profile", default=None, help=profile_help)
    rp.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="a parameter the runs were made with")
    rp.add_argument("--readme", default=None, help="also replace the report block of this README (README.md)")
    rp.add_argument("--refresh", action="store_true", help="write results/REPORT.md, the committed report (make run); "
                    "else runs/scratch/results/")
    rp.set_defaults(func=_report)
    g = sub.add_parser("gpu-check", help="on CUDA: estimate, engine benchmark, every notebook in gpu-quick, report "
                       "(<= 8 min); on CPU the same at smoke scale (docs/gpu.md)")
    g.add_argument("notebooks", nargs="*", help="numbers or stems (default: all)")
    g.add_argument("--budget-minutes", type=float, default=8.0, help="refuse a run estimated longer (default 8)")
    g.add_argument("--force", action="store_true", help="start even if over budget or without an estimate")
    g.add_argument("--estimate-only", action="store_true", help="print the estimate and stop")
    g.add_argument("--no-benchmark", action="store_true", help="skip benchmarks/llm_engine.py")
    g.add_argument("--mfu", type=float, default=None, help="MFU the estimate assumes (default: measured, else 5%%)")
    g.set_defaults(func=_gpu_check)
    pa = sub.add_parser("params", help="list every parameter: its value in a profile, allowed values, meaning")
    pa.add_argument("--profile", default=None, help=profile_help)
    pa.set_defaults(func=_params)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - every error becomes one line and an exit code
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        return report_error(args.command, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
