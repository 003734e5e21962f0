"""The LLM engine on the current device, side by side in one run: ranking users/s per-user vs batched, SFT tokens/s
padded vs padding-free (vs bin-packed), MFU against a matrix product timed in this process, and peak memory.

Same model, same MKV prompts (cpu-profile users and training windows), same process.  MFU = useful FLOP/s divided
by a matrix product timed in this process (fp32 on CPU, bf16 on CUDA) and, on CUDA, by the datasheet's dense bf16
peak; FLOPs are counted as every run's record counts them (workbench/compute.py: real tokens only, forward 2·N per
token plus the LM-head columns computed, training 3× its forward).  The padded and padding-free loss curves go to figures/benchmark_sft_loss.png.
Reproduce: `.venv/bin/python benchmarks/llm_engine.py` (CPU: about 10 minutes on 2 cores; nothing is asserted).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench import compute, config, metrics, process
from workbench.llm import likelihood, scoring, sft
from workbench.data.protocol import load_protocol
from workbench.recommender import get_method

ROOT = Path(__file__).resolve().parent.parent


def ranking_inputs(mkv, users: int) -> tuple[list[str], list[list[str]], list[int]]:
    """Evaluation prompts, candidate titles and target positions of the first `users` evaluated users."""
    view = mkv.eval_view().head(users)
    prompts = mkv.prompts(view)["prompt"].tolist()
    targets = [c.index(t) for c, t in zip(view["candidates"], view["target"])]
    return prompts, [[mkv.catalog.title(i) for i in c] for c in view["candidates"]], targets


def rank_agreement(a: list[np.ndarray], b: list[np.ndarray], targets: list[int]) -> str:
    """How many users' target ranks differ between two scorers, and how many of those have exact score ties."""
    ra, rb = (metrics.ranks_from_scores(np.stack(s), targets) for s in (a, b))
    differ = ra != rb
    tied = [len(set(np.round(x, 12))) < len(x) or len(set(np.round(y, 12))) < len(y)
            for x, y, d in zip(a, b, differ) if d]
    return f"{int(differ.sum())} of {len(ra)} users' ranks differ ({sum(tied)} of them with exact score ties)"


def bench_ranking(mkv, users: int, batch_size: int | None, rate: float) -> tuple[list[dict], str]:
    """users/s and MFU of per-user prefix-shared scoring vs the batched engine; how far their scores and ranks agree."""
    model, tok = mkv.model, mkv.tokenizer
    prompts, titles, targets = ranking_inputs(mkv, users)
    items = likelihood.make_items(tok, prompts, titles)
    scored = sum(len(c) for it in items for c in it.candidates)
    flop = compute.forward_flops(model, sum(it.length for it in items), scored)
    size = batch_size or likelihood.auto_batch_size(model, max(it.length for it in items),
                                                max(sum(map(len, it.candidates)) for it in items), model.device)
    variants = {"per-user (prefix-shared)": lambda: [scoring.score_prefix_shared(model, tok, p, t)
                                                     for p, t in zip(prompts, titles)],
                f"batched ({size} per pass)": lambda: likelihood.score_items(model, items, tok.pad_token_id, batch_size=size,
                                                                     progress=False)}
    likelihood.score_items(model, items[:1], tok.pad_token_id, progress=False)  # warm-up
    rows, scores = [], {}
    for name, run in variants.items():
        with torch.no_grad(), compute.PeakMemory(model.device) as mem:
            start = time.perf_counter()
            scores[name] = run()
            if str(model.device).startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        rows.append({"step": f"ranking {users} users: {name}", "rate": users / seconds, "unit": "users/s",
                     "MFU": flop / seconds / rate, "peak MB": mem.top / 2 ** 20})
    a, b = scores.values()
    delta = max(np.abs(x - y).max() for x, y in zip(a, b))
    return rows, f"max |Δ log p| batched vs per-user {delta:.2e}; {rank_agreement(a, b, targets)}"


def bench_sft(mkv, cfg: dict, samples: int, variants, rate: float) -> tuple[list[dict], dict]:
    """SFT tokens/s and MFU per (SFT_PACKING, ATTENTION) variant on the same prompts; returns the rows, loss curves."""
    examples = mkv.prompts(mkv.training_view(samples), 0)
    tok = mkv.tokenizer
    lengths = np.array([len(tok(p + c, add_special_tokens=False)["input_ids"]) + 1
                        for p, c in zip(examples["prompt"], examples["completion"])])
    rows, curves = [], {}
    for variant in variants:
        mode, _, attention = variant.partition(":")
        changes = {"SFT_PACKING": mode, "ATTENTION": attention or None}
        out = Path(tempfile.mkdtemp(prefix=f"sft-{mode}-"))
        try:
            fresh = type(mkv)(config.override(cfg, **changes), mkv.protocol, mkv.device)  # a fresh base model
            process.seed_everything(cfg["SEED"])
            meter = compute.Meter(fresh.device)  # the same counts and timing as a run's record
            with meter.phase("fit"):
                _, log = sft.train_sft(fresh.model, fresh.tokenizer, examples, fresh.cfg, out, fresh.device,
                                       resume=False)
            fit = meter.phases["fit"]
            seconds, flops, peak, tokens = (fit["seconds"], fit["counts"]["flops"], fit["peak"],
                                            fit["counts"]["train_tokens"])
        except Exception as err:  # noqa: BLE001 - a variant this machine cannot run is a row, not the end of the table
            print(f"SFT variant {variant} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            rows.append({"step": f"SFT {len(examples)} prompts: {variant} (failed)", "unit": "tokens/s"})
            continue
        finally:
            shutil.rmtree(out, ignore_errors=True)
        curves[variant] = log
        attention = fresh.model.config._attn_implementation
        rows.append({"step": f"SFT {len(examples)} prompts: {mode}, {attention}", "rate": tokens / seconds,
                     "unit": "tokens/s", "MFU": flops / seconds / rate, "peak MB": peak / 2 ** 20})
    return rows, curves, padding_bound(lengths, cfg["LLM_BATCH_SIZE"], cfg["SEED"])


def padding_bound(lengths: np.ndarray, batch: int, seed: int) -> str:
    """Share of a padded run's tokens that are padding (random batches), and the speed-up removing it could give."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    padded = sum(len(b) * lengths[b].max() for b in np.array_split(order, max(1, len(order) // batch)))
    share = 1 - lengths.sum() / padded
    return (f"padding is {share:.1%} of a padded run's tokens (batch {batch}, prompts of {lengths.min()}-"
            f"{lengths.max()} tokens): removing it can speed SFT up by at most {1 / (1 - share):.2f}x")


def plot_curves(curves: dict, path: Path, title: str) -> None:
    """Loss per step of each SFT mode on one axis."""
    from workbench.notebook import plots
    plots.setup()
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    styles = [("o", "-", 9), ("x", "--", 7), ("s", ":", 5), ("^", "-.", 5)]  # overlapping curves stay visible
    for (mode, log), (marker, line, size) in zip(curves.items(), styles * len(curves)):
        ax.plot(log["step"], log["loss"], label=mode, linestyle=line, marker=marker if len(log) < 40 else None,
                markersize=size, alpha=0.85)
    if len(curves) and max(len(c) for c in curves.values()) < 40:
        ax.set_xticks(sorted({int(x) for c in curves.values() for x in c["step"]}))
    ax.set(xlabel="optimizer step", ylabel="training loss (completion tokens)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    """Measure ranking and SFT variants on one device and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None)
    parser.add_argument("--users", type=int, default=None, help="ranked users (default: 16 on CPU, 943 on CUDA)")
    parser.add_argument("--samples", type=int, default=None, help="SFT prompts (default: 32 on CPU, 4000 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="ranking rows per pass (default: automatic)")
    parser.add_argument("--sft-batch", type=int, default=None, help="SFT batch size (default: the profile's)")
    parser.add_argument("--sft", default=None, help="SFT variants SFT_PACKING[:ATTENTION], comma-separated (default: "
                        "padded, padding_free, packed with sdpa; on CUDA also padding_free:flex_attention)")
    parser.add_argument("--table", default=None, help="also write the table to this CSV (gpu-check does)")
    parser.add_argument("--figure", default=None, help="the loss curves' PNG (default: figures/"
                        "benchmark_sft_loss_<cpu|gpu>.png)")
    args = parser.parse_args()
    device = process.pick_device(args.device)
    cuda = device.startswith("cuda")
    profile = "smoke" if args.model == "tiny" else ("gpu" if cuda else "cpu")
    users = args.users or (943 if cuda else 16)
    overrides = {"MODEL": args.model, "LLM_EVAL_USERS": users, "SAVE_STEPS": 10 ** 6, "LORA_DROPOUT": 0.0}
    if args.sft_batch:
        overrides["LLM_BATCH_SIZE"] = args.sft_batch
    cfg = config.resolve(profile, **overrides)
    process.seed_everything(cfg["SEED"])
    protocol = load_protocol(cfg)
    mkv = get_method("mkv")(cfg, protocol, device)
    rate = compute.matmul_rate(device, "bf16" if cuda else "fp32")
    rank_rows, delta = bench_ranking(mkv, users, args.batch_size, rate)
    variants = (args.sft or "padded,padding_free,packed" + (",padding_free:flex_attention" if cuda else "")).split(",")
    sft_rows, curves, bound = bench_sft(mkv, cfg, args.samples or (4000 if cuda else 32), variants, rate)
    table = pd.DataFrame(rank_rows + sft_rows).set_index("step")
    for kind in ("users/s", "tokens/s"):
        part = table["unit"] == kind
        table.loc[part, "speed-up"] = table.loc[part, "rate"] / table.loc[part, "rate"].iloc[0]
    sheet = compute.datasheet_peak(process.device_description(device)) if cuda else None
    if sheet:
        table["MFU (datasheet)"] = table["MFU"] * rate / sheet
    print(f"{args.model} on {process.device_description(device)}, torch {torch.__version__}, "
          f"{'bf16' if cuda else 'fp32'}, attention {mkv.model.config._attn_implementation}; matmul rate "
          f"{rate / 1e12:.2f} TFLOP/s (the MFU denominator); SFT batch {cfg['LLM_BATCH_SIZE']} x GRAD_ACCUM "
          f"{cfg['GRAD_ACCUM']}, LoRA r={cfg['LORA_R']}, dropout 0 (so padded and padding-free losses can match)")
    fmt = {"rate": "{:,.1f}".format, "MFU": "{:.1%}".format, "MFU (datasheet)": "{:.1%}".format,
           "peak MB": "{:,.0f}".format, "speed-up": "{:.2f}x".format}
    print(table.to_string(formatters=fmt))
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        table.assign(device=process.device_description(device), model=args.model, dtype="bf16" if cuda else "fp32",
                     matmul_tflops=rate / 1e12, commit=process.git_commit()).to_csv(args.table)
        print(f"table: {args.table}")
    print(delta)
    print(bound)
    final = {m: float(c["loss"].iloc[-1]) for m, c in curves.items() if len(c)}
    print("final SFT loss per mode: " + ", ".join(f"{m} {v:.4f}" for m, v in final.items()))
    figure = Path(args.figure or ROOT / "figures" / f"benchmark_sft_loss_{'gpu' if cuda else 'cpu'}.png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, figure, f"SFT loss, {args.model}, {process.device_description(device)}")
    print(f"loss curves: {figure}")


if __name__ == "__main__":
    main()
