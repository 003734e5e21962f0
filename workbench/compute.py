"""What a run cost on its device: work counted where it is done, timed per phase, and MFU against two peaks.

The engine counts its own work (`count`: tokens, FLOPs, rows) and the settings it chose (`chose`: batch sizes,
attention kernel, dtype) into the active `Meter`; `run_method` opens one per run (phases fit and rank) and saves
`Meter.summary()` as the record's `compute` entry.  Nothing is counted outside a Meter, so the engine runs the same
without one.  FLOPs count real tokens only (no padding), attention scores left out: a forward pass is 2·N per token
(N = parameters outside the embedding and LM head) plus 2·hidden·vocab per LM-head column computed; training is 3×
its forward (the 6·N convention of full fine-tuning; LoRA skips the frozen weights' gradients, so a GPU does about
2/3 of that).  MFU = FLOPs / phase seconds / peak, against a matrix product timed in this process
(`matmul_rate`) and the datasheet's dense bf16 rate (`datasheet_peak`, CUDA only).  A phase that did no work
(a training reused whole from its checkpoints) reports no rate rather than a rate of 0 or infinity.
Reproduce: `python -m workbench run 03 --profile smoke`, then read `compute` in the saved run's record.json.
"""
from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

# Dense bf16 tensor-core peak (TFLOP/s, without sparsity) by a substring of torch.cuda.get_device_name, most
# specific first; from the vendors' datasheets.
DATASHEET_BF16_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
                         ("H100", 989.4), ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0),
                         ("A10G", 70.0), ("RTX 4090", 165.2))

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("workbench_meter", default=None)


def is_cuda(device) -> bool:
    """Whether a device (name or torch.device) is a CUDA device."""
    return str(device).startswith("cuda")


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer reads finished work; nothing on CPU."""
    if is_cuda(device):
        import torch
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory while the block runs, above its starting level (`peak`) and in all (`top`): the CUDA allocator's,
    else the process's resident set size (sampled every 10 ms)."""

    def __init__(self, device):
        self.cuda, self.peak, self.top = is_cuda(device), 0, 0

    @staticmethod
    def _rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.01)

    def __enter__(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self._stop = self._rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            self.top = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.top = self.base + max(self.peak, self._rss() - self.base)
        self.peak = self.top - self.base


def matmul_rate(device: str, dtype: str = "bf16") -> float:
    """FLOP/s of a large square matrix product on `device` in `dtype` (bf16 | fp32), best of five after a warm-up;
    timed once per process (and per CPU thread count)."""
    import torch
    return _matmul_rate(str(device), dtype, 0 if is_cuda(device) else torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _matmul_rate(device: str, dtype: str, threads: int) -> float:
    import torch
    cuda = is_cuda(device)
    n = 8192 if cuda else (1024 if dtype == "fp32" else 512)  # bf16 on a CPU without bf16 units is slow
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=kind) for _ in range(2))
    best = float("inf")
    for _ in range(6):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def datasheet_peak(device_name: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a GPU by name (`DATASHEET_BF16_TFLOPS`); None when unknown or a CPU."""
    for part, tflops in DATASHEET_BF16_TFLOPS:
        if part.lower() in device_name.lower():
            return tflops * 1e12
    return None


def dtype_name(dtype) -> str:
    """bf16 | fp16 | fp32 of a torch dtype."""
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}.get(str(dtype), str(dtype))


def model_sizes(model) -> tuple[int, int]:
    """(parameters outside the input embedding and LM head, hidden × vocab of the LM head): the FLOP counts' N."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    skip = {id(base.get_input_embeddings().weight), id(base.get_output_embeddings().weight)}
    body = sum(p.numel() for p in base.parameters() if id(p) not in skip)
    return int(body), int(base.config.hidden_size * base.config.vocab_size)


def forward_flops(model, tokens: int, head_columns: int) -> int:
    """FLOPs of one forward pass over `tokens` real tokens with `head_columns` LM-head outputs computed."""
    body, head = model_sizes(model)
    return 2 * body * tokens + 2 * head * head_columns


def count_forward(model, real: int, padded_shape, head_shape) -> None:
    """Count one forward pass of the batched scorer: rows, real and padded tokens, FLOPs (3× under gradients: the
    listwise term's backward costs twice its forward)."""
    import torch
    rows, width = padded_shape
    flops = forward_flops(model, real, head_shape[0] * head_shape[1])
    count(sequences=rows, forward_tokens=real, padded_tokens=rows * width,
          flops=(3 if torch.is_grad_enabled() else 1) * flops)


def count_generation(model, prompt_tokens: int, new_ids, eos_id: int) -> None:
    """Count greedy generation's work: the prompts' real tokens and each row's new ones up to and with its end
    token, one LM-head column per new token (what a KV-cached generate computes)."""
    ended = (new_ids == eos_id).int().cumsum(1) > 0
    new = int((~ended).sum()) + int(ended.any(1).sum())
    count(generated_tokens=new, forward_tokens=prompt_tokens + new,
          flops=forward_flops(model, prompt_tokens + new, new))


def count(**amounts) -> None:
    """Add numbers (tokens, flops, rows...) to the active Meter's current phase; nothing without one."""
    meter = _ACTIVE.get()
    if meter is not None:
        meter.add(amounts)


def chose(**values) -> None:
    """Note settings the engine chose (batch size, attention kernel, dtype) in the active Meter's current phase."""
    meter = _ACTIVE.get()
    if meter is not None:
        meter.note(values)


class Meter:
    """Work and settings counted by the engine while active, per phase, with each phase's seconds and peak memory."""

    def __init__(self, device):
        self.device = str(device)
        self.phases: dict[str, dict] = {}
        self.current: str | None = None

    def add(self, amounts: dict) -> None:
        """Sum `amounts` into the current phase ('other' outside a phase)."""
        phase = self._phase(self.current or "other")
        for key, value in amounts.items():
            phase["counts"][key] += value

    def note(self, values: dict) -> None:
        """Collect the distinct values of each chosen setting in the current phase."""
        phase = self._phase(self.current or "other")
        for key, value in values.items():
            phase["chose"][key].add(value)

    def _phase(self, name: str) -> dict:
        return self.phases.setdefault(name, {"counts": defaultdict(int), "chose": defaultdict(set), "seconds": 0.0,
                                             "peak": 0})

    @contextmanager
    def phase(self, name: str):
        """Time a phase (device work finished at both ends), count into it, and record its peak memory (in all: what
        the phase needed the device to hold, the model included)."""
        token = _ACTIVE.set(self)
        previous, self.current = self.current, name
        self._phase(name)
        synchronize(self.device)
        start = time.perf_counter()
        try:
            with PeakMemory(self.device) as memory:
                yield self
                synchronize(self.device)
        finally:
            self.phases[name]["seconds"] += time.perf_counter() - start
            self.phases[name]["peak"] = max(self.phases[name]["peak"], memory.top)
            self.current = previous
            _ACTIVE.reset(token)

    def summary(self, units: dict | None = None) -> dict:
        """{device, peaks, phase: {seconds, counts, rates, MFU, chosen settings, peak MB}}; {} when nothing was
        counted (a run outside the LLM engine).  units: {phase: (name, n)} adds a rate of n per second (users/s).
        The matmul peak is timed in the dtype the engine noted (fp32 when it noted none, or several)."""
        if not any(p["counts"] for p in self.phases.values()):
            return {}
        dtypes = {d for p in self.phases.values() for d in p["chose"].get("dtype", ())}
        dtype = dtypes.pop() if len(dtypes) == 1 else "fp32"
        from .process import device_description
        name = device_description(self.device)
        measured, sheet = matmul_rate(self.device, dtype), (datasheet_peak(name) if is_cuda(self.device) else None)
        out = {"device": name, "matmul_dtype": dtype, "matmul_tflops": round(measured / 1e12, 3),
               "datasheet_bf16_tflops": None if sheet is None else round(sheet / 1e12, 1)}
        for phase, p in self.phases.items():
            seconds, counts = p["seconds"], dict(p["counts"])
            entry = {"seconds": round(seconds, 3), **counts,
                     **{k: sorted(v, key=str) for k, v in p["chose"].items()},
                     "peak_memory_mb": round(p["peak"] / 2 ** 20, 1)}
            unit, n = (units or {}).get(phase, (None, 0))
            work = counts.get("flops", 0)
            if work and seconds > 0:
                entry["mfu_vs_matmul"] = round(work / seconds / measured, 5)
                entry["mfu_vs_datasheet"] = None if sheet is None else round(work / seconds / sheet, 5)
                if counts.get("train_tokens"):
                    entry["train_tokens_per_s"] = round(counts["train_tokens"] / seconds, 1)
                if unit and n:
                    entry[f"{unit}_per_s"] = round(n / seconds, 3)
            out[phase] = entry
        return out
