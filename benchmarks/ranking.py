"""Candidate scoring: prefix-shared vs naive per-candidate likelihood vs generate-then-match, side by side.

Same model, same prompts, one process; prints wall time per user, ratios against naive, the FLOP floor
N(p+c)/(p+Nc) of prefix sharing for the measured prompt length p, mean candidate length c and N candidates,
and the largest |Δ log p| between prefix-shared and naive scores.
Reproduce: `.venv/bin/python benchmarks/ranking.py --model smollm2-135m --users 5` (nothing is asserted).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from workbench import config, process
from workbench.llm import scoring
from workbench.data.protocol import load_protocol
from workbench.recommender import get_method


def main() -> None:
    """Measure each scorer on the same users and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    profile = "smoke" if args.model == "tiny" else "cpu"
    cfg = config.resolve(profile, MODEL=args.model, LLM_EVAL_USERS=args.users)
    device = process.pick_device(args.device)
    protocol = load_protocol(cfg)
    mkv = get_method("mkv")(cfg, protocol, device)  # zero-shot MKV prompts on the seeded LLM_EVAL_USERS subset
    model, tok, catalog = mkv.model, mkv.tokenizer, mkv.catalog
    view = mkv.eval_view()
    prompts = mkv.prompts(view)["prompt"].tolist()
    titles = [[catalog.title(i) for i in c] for c in view["candidates"]]
    scoring.score_prefix_shared(model, tok, prompts[0], titles[0])  # warm-up
    timings, scores = {}, {}
    for name, fn in [("prefix-shared", scoring.score_prefix_shared), ("naive", scoring.score_naive)]:
        start = time.perf_counter()
        scores[name] = [fn(model, tok, p, t) for p, t in zip(prompts, titles)]
        timings[name] = (time.perf_counter() - start) / len(prompts)
    start = time.perf_counter()
    for p in prompts:
        scoring.generate_answer(model, tok, p)
    timings["generate-then-match"] = (time.perf_counter() - start) / len(prompts)
    p_len = np.mean([len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts])
    c_len = np.mean([len(ids) for t in titles for ids in scoring.completion_ids(tok, t)])
    n = len(titles[0])
    delta = max(np.abs(a - b).max() for a, b in zip(scores["prefix-shared"], scores["naive"]))
    table = pd.DataFrame({"s/user": timings}).assign(**{"speed-up vs naive": lambda d: timings["naive"] / d["s/user"]})
    print(f"{args.model} on {process.device_description(device)}, {len(prompts)} users, N={n} candidates, "
          f"p={p_len:.0f} prompt tokens, c={c_len:.1f} tokens per candidate (with end-of-turn), torch {torch.__version__}")
    print(table.round(3).to_string())
    print(f"FLOP floor of prefix sharing N(p+c)/(p+Nc) = {n * (p_len + c_len) / (p_len + n * c_len):.2f}x; "
          f"max |Δ log p| prefix-shared vs naive = {delta:.2e}")


if __name__ == "__main__":
    main()
