"""Learning curve: test NDCG@10 against SFT training windows, per method x objective x prompt form, each point paired
with the combination's zero-shot model, Popularity and SASRec on the same users.

One training run per combination (LLM_TRAIN_SAMPLES = the largest point, constant learning rate so that a point's
model does not depend on the run's length); the adapter (and soft-token embedder) is saved when the run has seen each
point's number of windows, and every saved point is ranked afterwards.  A combination stops early when, after the
point named by --check-at, its paired NDCG@10 difference against its own zero-shot is not above 0 (that much training
bought nothing; the larger points would cost the most).  Every finished point is appended to the CSV at once, and a
rerun skips what the CSV holds and resumes an interrupted training from its last checkpoint.

Writes results/benchmarks/learning_curve.csv (one row per combination and point) and figures/learning_curve.png;
the per-user ranks of each point go to results/benchmarks/learning_curve/<combination>-<windows>.csv.
Reproduce (cpu, SmolLM2-135M, 2 cores; hours: run it in its own checkout and cache, in the background):
  WORKBENCH_CACHE=/tmp/lc-cache .venv/bin/python benchmarks/learning_curve.py --points 0,64,256,1024 --users 200 \
      --set LLM_LEARNING_RATE=5e-4   # the committed curve's rate (the cpu default before 2026-12-02)
`--profile smoke --points 0,8,16 --users 6` checks the plumbing in a minute (the tiny model learns nothing).
A fourth field varies one training setting of a combination against the same zero-shot model: `rsllm:sft:free:mlp`
(LoRA on the MLP too), `mkv:sft:free:LLM_LEARNING_RATE=2e-3`.
"""
from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench import config, metrics, process  # noqa: E402
from workbench.assets import atomic_write  # noqa: E402
from workbench.data.protocol import load_protocol  # noqa: E402
from workbench.evaluation.curve import label  # noqa: E402
from workbench.llm import softtokens  # noqa: E402
from workbench.llm.sft import without_embedding_layers  # noqa: E402
from workbench.methods.pipeline import find_run, ranks_on  # noqa: E402
from workbench.recommender import get_method  # noqa: E402

# method:objective:form -> the method's settings for the curve (MKV answers a title: a free prompt lists nothing to
# re-rank; RSLLM in one stage on unified prompts: one training run per combination)
SETTINGS = {"mkv": {"MKV_OUTPUT": "title", "AUGMENT": ["none"]},
            "rsllm": {"RSLLM_PROMPT": "unified", "RSLLM_STAGES": 1}}
COMBOS = [f"{m}:{o}:{f}" for m in SETTINGS for f in ("free", "listed") for o in ("sft", "listwise")]
# an optional fourth field changes one training setting (the zero-shot model is shared): mlp adds LoRA to the MLP
# projections; cosine decays the learning rate to 0 over the run (only its largest point has seen the whole schedule);
# PARAM=VALUE sets one training-only parameter (e.g. LLM_LEARNING_RATE=2e-3): one that cannot change how the
# untrained model ranks, so the combination's zero-shot reference stays the one of its method and form
TRAINING_ONLY = ("LLM_LEARNING_RATE", "LR_SCHEDULE", "WARMUP_STEPS", "LORA_R", "LORA_ALPHA", "LORA_DROPOUT",
                 "LORA_TARGETS", "LLM_BATCH_SIZE", "GRAD_ACCUM", "LLM_EPOCHS", "LISTWISE_TEMPERATURE")
VARIANTS = {"mlp": {"LORA_TARGETS": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
            "cosine": {"LR_SCHEDULE": "cosine"}}
# what every row of one curve shares beside profile, users, model, seed and dtype (recorded beside its CSV): the
# committed curve was made with LLM_LEARNING_RATE 5e-4 (the cpu default then), resumed by `--set LLM_LEARNING_RATE=5e-4`
SHARED = TRAINING_ONLY + ("MAX_PROMPT_TOKENS", "MAX_COMPLETION_TOKENS", "SFT_PACKING", "HISTORY_LEN", "N_NEGATIVES",
                          "CANDIDATE_SEED", "SCORE_ORDERS", "SCORE_REDUCE")
OUT = ROOT / "results" / "benchmarks"


class SavePoints(TrainerCallback):
    """Save the adapter (and the soft-token embedder) when the run has trained on each point's windows; at step
    `stop_at` (if given) save a checkpoint and stop: a later call with the same settings resumes from it."""

    def __init__(self, steps: dict, folder: Path, stop_at: int | None = None):
        self.steps, self.folder, self.stop_at = steps, folder, stop_at  # optimiser step -> windows seen

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.stop_at is not None and state.global_step >= self.stop_at:
            control.should_save = control.should_training_stop = True
        windows = self.steps.get(state.global_step)
        if windows is None or (self.folder / f"point-{windows}").exists():
            return
        tmp = self.folder / f".point-{windows}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with without_embedding_layers(model):
            model.save_pretrained(tmp)
        if getattr(model, "soft_embedder", None) is not None:
            softtokens.save_embedder(model.soft_embedder, tmp)
        tmp.rename(self.folder / f"point-{windows}")


def literal(text: str):
    """A Python literal (2e-3, [0, 1]), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def base_changes(pairs: list[str]) -> dict:
    """--set PARAM=VALUE pairs: settings of every combination and of the zero-shot model."""
    changes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: use PARAM=VALUE")
        changes[name] = literal(value)
    return changes


def variant_changes(variant: str) -> dict:
    """A named variant's settings, or PARAM=VALUE for a TRAINING_ONLY parameter (VALUE a Python literal, else a
    string)."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    name, sep, value = variant.partition("=")
    if not sep:
        raise SystemExit(f"variant {variant!r}: use one of {', '.join(VARIANTS)} or PARAM=VALUE")
    if name not in TRAINING_ONLY:
        raise SystemExit(f"variant {variant!r}: {name} may change how the untrained model ranks, and the combination "
                         f"is paired with its method's and form's zero-shot: vary one of {', '.join(TRAINING_ONLY)}, "
                         f"or add a method setting to SETTINGS")
    return {name: literal(value)}


def combo_cfg(base: dict, combo: str, windows: int) -> dict:
    """The parameters of one combination (method:objective:form[:variant]) trained on `windows` windows."""
    parts = combo.split(":")
    if not 3 <= len(parts) <= 4:
        raise SystemExit(f"combination {combo!r}: use method:objective:form[:variant], variant one of "
                         f"{', '.join(VARIANTS)} or PARAM=VALUE")
    method, objective, form = parts[:3]
    cfg = config.override(base, **SETTINGS[method], LLM_OBJECTIVE=objective, PROMPT_FORM=form,
                          LLM_TRAIN_SAMPLES=windows, LR_SCHEDULE="constant", GEN_EVAL_USERS=0)
    return config.override(cfg, **variant_changes(parts[3])) if len(parts) == 4 else cfg


def check_setting(path: Path, setting: dict) -> None:
    """Record what every row and saved rank of this curve shares (profile, users, model, seed, dtype, device and the
    SHARED settings) beside its CSV, and refuse to add to a curve made with another: its zero-shot ranks and done
    points would be mismatched."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != setting:
            diff = ", ".join(f"{k} {saved.get(k)!r} (now {v!r})" for k, v in setting.items() if saved.get(k) != v)
            raise SystemExit(f"{path.with_suffix('.csv')} holds a curve made with {diff}: give --out another file "
                             f"(or the same settings)")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(setting, indent=1) + "\n"))


def point_ranks(method: str, cfg: dict, protocol, point: Path | None) -> tuple[pd.DataFrame, float]:
    """Ranks of the eval users by the base model (point None: zero-shot) or with a saved point's adapter."""
    from peft import PeftModel
    start = time.time()
    rec = get_method(method)(cfg, protocol)
    rec.use_threads()
    rec.setup()
    if point is not None:
        rec.model = PeftModel.from_pretrained(rec.model, point).eval()
        if rec.soft_embedder is not None:
            softtokens.load_embedder(rec.soft_embedder, point)
    view = rec.eval_view()
    return rec.rank(view)[["user_id", "rank"]], time.time() - start


def train_points(combo: str, base: dict, protocol, points: list[int], folder: Path, until: int | None = None) -> float:
    """Train the combination up to the largest point (or stop after `until` windows, resumable), saving each point's
    adapter on the way; returns the seconds."""
    method = combo.split(":")[0]
    cfg = combo_cfg(base, combo, max(points))
    per_step = cfg["LLM_BATCH_SIZE"] * cfg["GRAD_ACCUM"]
    if any(p % per_step for p in points):
        raise SystemExit(f"every point must be a multiple of LLM_BATCH_SIZE x GRAD_ACCUM = {per_step} windows")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    process.seed_everything(cfg["SEED"])
    rec = get_method(method)(cfg, protocol)
    rec.fit(callbacks=[SavePoints({p // per_step: p for p in points}, folder, until and until // per_step)])
    return time.time() - start


def paired(ranks: pd.DataFrame, other: pd.DataFrame, users, n_boot: int) -> tuple[float, float, float]:
    """NDCG@10 difference [CI] of `ranks` minus `other` on `users`."""
    row = metrics.paired_bootstrap(ranks_on(ranks, users), ranks_on(other, users), n_boot).loc["NDCG@10"]
    return float(row["diff"]), float(row["ci_low"]), float(row["ci_high"])


def point_row(combo, p, ranks, zero, refs, users, train_s, rank_s, n_boot) -> dict:
    """One CSV row: the point's NDCG@10 [CI], HR@1, and its paired NDCG@10 difference against the combination's
    zero-shot, Popularity and SASRec on the same users."""
    ci = metrics.bootstrap_ci(ranks_on(ranks, users), n_boot).loc["NDCG@10"]
    row = {"combo": combo, "windows": p, "users": len(users), "ndcg10": float(ci["mean"]),
           "ci_low": float(ci["ci_low"]), "ci_high": float(ci["ci_high"]),
           "hr1": float((ranks_on(ranks, users) == 1).mean()), "train_s": round(train_s, 1),
           "rank_s": round(rank_s, 1), "commit": process.git_commit()}
    for name, other in (("zeroshot", zero), *refs.items()):
        row[f"vs_{name}"], row[f"vs_{name}_low"], row[f"vs_{name}_high"] = paired(ranks, other, users, n_boot)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--combos", default=",".join(COMBOS), help="method:objective:form[:variant], comma-separated "
                        f"(variants: {', '.join(VARIANTS)}, PARAM=VALUE)")
    parser.add_argument("--points", default="0,64,256,1024", help="training windows, comma-separated (0: zero-shot)")
    parser.add_argument("--users", type=int, default=200, help="test users (the seeded LLM_EVAL_USERS subset)")
    parser.add_argument("--check-at", type=int, default=256, help="stop a combination after this point unless it "
                        "beats its zero-shot (0: never stop early)")
    parser.add_argument("--check-only", action="store_true", help="train and evaluate up to --check-at only; a "
                        "later run without it continues from the checkpoint")
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from the CSV, run nothing")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                        help="a setting of every combination (repeatable); the committed curve needs "
                             "LLM_LEARNING_RATE=5e-4")
    parser.add_argument("--out", default=str(OUT / "learning_curve.csv"))
    parser.add_argument("--figure", default=str(ROOT / "figures" / "learning_curve.png"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "learning_curve"),
                        help="where the points' adapters are saved (not committed)")
    args = parser.parse_args(argv)
    base = config.resolve(args.profile, **{**base_changes(args.set), "LLM_EVAL_USERS": args.users})
    combos = args.combos.split(",")
    for combo in combos:  # every combination checked before the first one runs
        if combo.split(":")[0] not in SETTINGS:
            raise SystemExit(f"combination {combo!r}: the method is one of {', '.join(SETTINGS)}")
        combo_cfg(base, combo, 0)
    protocol = load_protocol(base)
    points = sorted({int(p) for p in args.points.split(",")})
    out = Path(args.out)
    setting = {"profile": args.profile, "users": args.users, "model": base["MODEL"], "seed": base["SEED"],
               "dtype": base["DTYPE"], "device": process.device_description("cpu"), **{k: base[k] for k in SHARED}}
    if args.plot_only:
        saved = out.with_suffix(".json")
        device = json.loads(saved.read_text())["device"] if saved.exists() else setting["device"]
        plot(pd.read_csv(out), Path(args.figure), base, args.users, device)
        return 0
    check_setting(out.with_suffix(".json"), setting)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["combo", "windows"])
    ranks_dir = out.with_suffix("")
    ranks_dir.mkdir(parents=True, exist_ok=True)
    refs = {name: find_run(name, base, protocol).ranks for name in ("popularity", "sasrec")}
    print(f"learning curve: profile {args.profile}, {args.users} users, points {points}, device "
          f"{process.device_description('cpu')}, commit {process.git_commit()}", flush=True)
    for combo in combos:
        method = combo.split(":")[0]
        zero_name = f"{method}:zeroshot:{combo.split(':')[2]}"  # zero-shot depends on the method and form only
        zero_file = ranks_dir / f"{zero_name.replace(':', '-')}.csv"
        if not zero_file.exists():
            ranks, seconds = point_ranks(method, combo_cfg(base, combo, 0), protocol, None)
            atomic_write(zero_file, lambda tmp: ranks.to_csv(tmp, index=False))
        zero = pd.read_csv(zero_file)
        users = sorted(zero["user_id"])
        folder = Path(args.work) / args.profile / combo.replace(":", "-")  # the saved points
        seconds, stopped = 0.0, False
        stages = [[p for p in points if p <= args.check_at], points] if args.check_at else [points]
        stages = stages[:1] if args.check_only else stages
        for stage in stages:
            todo = [p for p in stage if not ((done["combo"] == combo) & (done["windows"] == p)).any()]
            if stopped or not todo:
                continue
            if any(p > 0 for p in todo):  # train (or resume) to the stage's last point; the largest ends the run
                until = None if max(stage) == max(points) else max(stage)
                seconds += train_points(combo, base, protocol, [p for p in points if p], folder, until)
            for p in todo:
                if p == 0:
                    ranks, rank_s = zero, 0.0
                else:
                    ranks, rank_s = point_ranks(method, combo_cfg(base, combo, max(points)), protocol,
                                                folder / f"point-{p}")
                row = point_row(combo, p, ranks, zero, refs, users, seconds, rank_s, base["N_BOOTSTRAP"])
                atomic_write(ranks_dir / f"{combo.replace(':', '-')}-{p}.csv",
                             lambda tmp: ranks.to_csv(tmp, index=False))
                done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                atomic_write(out, lambda tmp: done.to_csv(tmp, index=False))
                print(f"{combo} @ {p} windows: NDCG@10 {row['ndcg10']:.3f} [{row['ci_low']:.3f}, "
                      f"{row['ci_high']:.3f}]; - zero-shot {row['vs_zeroshot']:+.3f} [{row['vs_zeroshot_low']:+.3f}, "
                      f"{row['vs_zeroshot_high']:+.3f}]; - SASRec {row['vs_sasrec']:+.3f}", flush=True)
            checked = done[(done["combo"] == combo) & (done["windows"] == args.check_at)]
            if args.check_at and len(checked) and float(checked["vs_zeroshot"].iloc[0]) <= 0 and not stopped:
                print(f"{combo}: no gain over zero-shot at {args.check_at} windows: larger points skipped", flush=True)
                stopped = True
    plot(done, Path(args.figure), base, args.users, setting["device"])
    return 0


def plot(done: pd.DataFrame, path: Path, cfg: dict, users: int, device: str) -> None:
    """Left: NDCG@10 [CI] against windows, one line per combination, with Popularity, SASRec and random on the same
    users.  Right: each point's paired difference [CI] against its combination's own zero-shot model.  `device`: the
    machine the rows were made on (the curve's setting), not the one drawing them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, gain) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1.15, 1]})
    groups = list(done.sort_values("windows").groupby("combo", sort=False))
    ticks = sorted(done["windows"].unique())
    for k, (combo, rows) in enumerate(groups):
        # 0 (zero-shot) drawn at the left edge of the log axis; the combinations side by side, so every CI shows
        x = rows["windows"].clip(lower=8) * 2 ** (0.06 * (k - (len(groups) - 1) / 2))
        # marker: the method, line: the prompt form (more combinations than colours never look alike)
        method, _, form = combo.split(":")[:3]
        style = {"marker": "s" if method == "rsllm" else "o", "linestyle": "--" if form == "listed" else "-",
                 "color": f"C{k}" if k < 10 else plt.cm.tab20b(k % 20), "capsize": 3}
        ax.errorbar(x, rows["ndcg10"], yerr=[rows["ndcg10"] - rows["ci_low"], rows["ci_high"] - rows["ndcg10"]],
                    label=label(combo), **style)
        gain.errorbar(x, rows["vs_zeroshot"], yerr=[rows["vs_zeroshot"] - rows["vs_zeroshot_low"],
                                                   rows["vs_zeroshot_high"] - rows["vs_zeroshot"]], **style)
    first = done.iloc[0] if len(done) else None
    if first is not None:
        for name, style in (("popularity", ":"), ("sasrec", "--")):
            level = first["ndcg10"] - first[f"vs_{name}"]
            ax.axhline(level, color="gray", linestyle=style, label=f"{name} ({level:.3f})")
    ax.axhline(metrics.chance_level("NDCG@10", cfg["N_NEGATIVES"] + 1), color="black", linewidth=0.8,
               label="random")
    gain.axhline(0, color="black", linewidth=0.8)
    for a in (ax, gain):
        a.set_xscale("log", base=2)
        a.set_xticks([max(t, 8) for t in ticks], ["0 (zero-shot)" if t == 0 else str(t) for t in ticks])
        a.minorticks_off()
        a.set_xlabel("training windows")
    ax.set_ylabel(f"test NDCG@10, {users} users (95% CI)")
    gain.set_ylabel("NDCG@10 minus the combination's zero-shot (paired, 95% CI)")
    ax.legend(fontsize=8, ncol=2, loc="upper left", bbox_to_anchor=(0.01, 0.94), framealpha=0.9)
    commits = ", ".join(sorted({str(c)[:7] for c in done["commit"]})) if len(done) else process.git_commit()[:7]
    fig.suptitle(f"Learning curve: profile {cfg['PROFILE']}, seed {cfg['SEED']}, {cfg['MODEL']}, the same {users} "
                 f"test users for every point, {device}, commit {commits}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
