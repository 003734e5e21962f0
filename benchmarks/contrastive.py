"""What RSLLM's contrastive terms cost: SFT step time on the same unified prompts with LM loss only, + the user term,
+ the item term, + both; side by side in one process, ratios against LM only.

Reproduce: `.venv/bin/python benchmarks/contrastive.py --rows 16 --repeats 2` (SmolLM2-135M; `--model tiny` for a
quick check).  A warm-up run comes first (the first run in a process was 1.6x slower); variants are interleaved.
The ID table is random (its values do not change the cost); the prompts are the cpu profile's first training windows.
Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from workbench import config
from workbench.llm import softtokens
from workbench.methods.rsllm.contrastive import ContrastiveSFTTrainer
from workbench.data.protocol import load_protocol
from workbench.llm.recommender import training_subset
from workbench.llm.loading import load_llm
from workbench.llm.projector import IDEmbedder
from workbench.methods.mkv import prompts
from workbench.llm import unified
from workbench.llm.sft import train_sft

VARIANTS = {"LM only": (0.0, 0.0), "+ user term": (0.1, 0.0), "+ item term": (0.0, 0.1), "+ both": (0.1, 0.1)}


def seconds_per_step(model_name: str, rows: pd.DataFrame, cfg: dict, catalog, lambdas, out: Path) -> tuple:
    """(s/step, steps) of one SFT run from a fresh model on `rows` (train_sft wall time, tokenisation included)."""
    model, tok = load_llm(model_name, "cpu", tiny_texts=[catalog.title(i) for i in catalog.items], seed=0)
    softtokens.add_soft_token(model, tok)
    torch.manual_seed(0)
    width = model.get_input_embeddings().weight.shape[1]
    embedder = IDEmbedder(torch.randn(len(catalog.items) + 1, 64), width, target_std=0.02)
    extra = {} if not any(lambdas) else {
        "trainer_cls": ContrastiveSFTTrainer, "lambda_user": lambdas[0], "lambda_item": lambdas[1],
        "temperature": cfg["NCE_TEMPERATURE"], "align_items": cfg["ALIGN_ITEMS"],
        "titles": {i: catalog.title(i) for i in catalog.items}}
    start = time.perf_counter()
    _, log = train_sft(model, tok, rows, cfg, out, soft_embedder=embedder, resume=False, **extra)
    return (time.perf_counter() - start) / len(log), len(log)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant, interleaved; the fastest is kept")
    args = parser.parse_args()
    cfg = config.resolve("cpu", MODEL=args.model, SAVE_STEPS=10_000, WARMUP_STEPS=0)
    protocol = load_protocol(cfg)
    catalog = prompts.Catalog(protocol.data.users, protocol.data.items)
    view = training_subset(protocol, args.rows, cfg["N_NEGATIVES"], cfg["CANDIDATE_SEED"])
    _, tok = load_llm(args.model, "cpu", tiny_texts=[catalog.title(i) for i in catalog.items], seed=0)
    rows = unified.build_examples(catalog, view, tok, cfg["MAX_PROMPT_TOKENS"], "unified")
    times = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        seconds_per_step(args.model, rows, cfg, catalog, (0.0, 0.0), Path(tmp) / "warm-up")  # caches, thread pools
        for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits every variant
            for k, (name, lambdas) in enumerate(VARIANTS.items()):
                times[name].append(seconds_per_step(args.model, rows, cfg, catalog, lambdas,
                                                    Path(tmp) / f"{repeat}-{k}"))
    base = min(s for s, _ in times["LM only"])
    out = [{"loss": name, "s/step (fastest)": round(min(s for s, _ in runs), 2),
            "s/step (all runs)": ", ".join(f"{s:.1f}" for s, _ in runs), "steps": runs[0][1],
            "vs LM only": round(min(s for s, _ in runs) / base, 2)} for name, runs in times.items()]
    print(f"{args.model}, {len(rows)} unified prompts (mean {rows['prompt'].str.len().mean():.0f} chars), batch "
          f"{cfg['LLM_BATCH_SIZE']} x GRAD_ACCUM {cfg['GRAD_ACCUM']}, ALIGN_ITEMS {cfg['ALIGN_ITEMS']}, "
          f"torch {torch.__version__}, {os.cpu_count()} cores")
    print(pd.DataFrame(out).to_string(index=False))


if __name__ == "__main__":
    main()
