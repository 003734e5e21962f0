"""CPU threads for the baselines: training-step time with 1 vs N threads, side by side in one process.

Reproduce: `.venv/bin/python benchmarks/threads.py --steps 30` (prints a table; nothing is asserted).
Decides `runtime.set_threads`' rule (small models run no faster, or slower, on more threads).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from workbench import config  # noqa: E402
from workbench.data.protocol import load_protocol  # noqa: E402
from workbench.methods.baselines import models  # noqa: E402


def time_steps(name: str, protocol, cfg: dict, threads: int, steps: int) -> float:
    """Seconds per training step (forward, backward, Adam) on real batches."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.build_model(name, protocol.n_items, cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["LEARNING_RATE"])
    seq = models.pad_histories(protocol.train["history"][: steps * cfg["BATCH_SIZE"]], cfg["HISTORY_LEN"])
    target = torch.tensor(protocol.train["target"].to_numpy()[: len(seq)])
    batches = [(seq[i:i + cfg["BATCH_SIZE"]], target[i:i + cfg["BATCH_SIZE"]])
               for i in range(0, len(seq), cfg["BATCH_SIZE"])]
    for x, y in batches[:3]:  # warm-up
        nn.functional.cross_entropy(model(x), y).backward()
    start = time.perf_counter()
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    cfg = config.resolve("cpu")
    protocol = load_protocol(cfg)
    rows = []
    for name in ("sasrec", "gru4rec"):
        one = time_steps(name, protocol, cfg, 1, args.steps)
        many = time_steps(name, protocol, cfg, args.threads, args.steps)
        rows.append({"model": name, "params": sum(p.numel() for p in models.build_model(name, protocol.n_items, cfg).parameters()),
                     "s/step 1 thread": round(one, 4), f"s/step {args.threads} threads": round(many, 4),
                     f"speed-up {args.threads} vs 1": round(one / many, 2)})
    print(f"batch {cfg['BATCH_SIZE']}, history {cfg['HISTORY_LEN']}, dim {cfg['EMBED_DIM']}, {args.steps} steps, "
          f"torch {torch.__version__}, {os.cpu_count()} cores")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
