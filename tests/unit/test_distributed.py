"""`python -m workbench train` on two CPU processes through `accelerate launch` (gloo): both ranks train on their own
batches, their gradients are averaged (identical adapters), and exactly one process writes the one final adapter."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench import distributed
from workbench.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "accelerate" / "cpu2.yaml"
SAMPLES, BATCH = 16, 4  # 4 micro-batches: 2 per rank, one optimizer step each (GRAD_ACCUM 1 in the smoke profile)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One 2-process smoke training: its combined output, per-rank reports and checkpoint folder."""
    tmp = tmp_path_factory.mktemp("distributed")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env = {**env, "WORKBENCH_CHECKPOINTS": str(tmp / "checkpoints"), distributed.REPORT_ENV: str(tmp / "report"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
           "--main_process_port", str(free_port()), "-m", "workbench", "train", "mkv", "--profile", "smoke",
           "-p", "DEVICE", "cpu", "-p", "LLM_TRAIN_SAMPLES", str(SAMPLES), "-p", "LLM_BATCH_SIZE", str(BATCH)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    reports = {int(p.stem[4:]): json.loads(p.read_text()) for p in sorted((tmp / "report").glob("rank*.json"))}
    return output, reports, tmp / "checkpoints"


def test_both_ranks_trained_on_their_own_batches(launched):
    _, reports, _ = launched
    assert sorted(reports) == [0, 1] and all(r["world_size"] == 2 for r in reports.values())
    per_rank = math.ceil(SAMPLES / BATCH / 2)
    for r in reports.values():
        assert r["steps"] == per_rank and len(r["batches"]) == per_rank  # each rank did half the work, not all of it
    first, second = (set(reports[k]["batches"]) for k in (0, 1))
    assert reports[0]["batches"][0] != reports[1]["batches"][0]
    assert not first & second and len(first | second) == SAMPLES // BATCH  # disjoint shares covering every batch


def test_gradients_agree_and_the_loss_is_finite(launched):
    _, reports, _ = launched
    r0, r1 = reports[0], reports[1]
    assert r0["adapter_begin"] == r1["adapter_begin"]
    assert r0["adapter_end"] == r1["adapter_end"] != r0["adapter_begin"]  # trained, and the same on both ranks
    assert r0["losses"] and r0["losses_finite"] and all(math.isfinite(x) for x in r0["losses"] + r1["losses"])


def test_exactly_one_adapter_written_by_one_process(launched):
    from safetensors.torch import load_file
    output, reports, checkpoints = launched
    adapters = [p for p in checkpoints.rglob("adapter") if p.is_dir()]
    assert len(adapters) == 1 and not list(checkpoints.rglob(".adapter.partial*"))
    assert output.count("adapter saved to") == 1  # the main process wrote it; the other did not race it
    assert all(r["adapter_ready"] and Path(r["adapter"]) == adapters[0] for r in reports.values())  # others waited
    saved = distributed.state_digest(load_file(adapters[0] / "adapter_model.safetensors"))
    assert saved == reports[0]["adapter_end"]
    assert f"adapter: {adapters[0]}" in output


def test_train_refuses_a_method_that_is_not_an_llm(capsys):
    assert main(["train", "sasrec", "--profile", "smoke"]) == 2
    assert "sasrec is not an LLM method" in capsys.readouterr().err


def test_each_process_gets_its_own_device(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert distributed.local_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.local_device("cpu") == "cpu"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert distributed.local_device(None) == "cpu"
    if torch.cuda.device_count() >= 2:
        assert distributed.local_device("cuda") == "cuda:1"
        with pytest.raises(ValueError, match="every process on one GPU"):
            distributed.local_device("cuda:0")


def test_digests_compare_values_across_precisions():
    t = torch.randn(3, 4)
    assert distributed.tensor_digest(t.bfloat16()) == distributed.tensor_digest(t.bfloat16().float())
    assert distributed.state_digest({"a": t, "b": t + 1}) != distributed.state_digest({"a": t + 1, "b": t})


class GatheringAccelerator:
    """Stands in for accelerate under FSDP on one process: get_state_dict gathers (here: returns) the full weights."""
    is_main_process, num_processes = True, 1

    def __init__(self):
        self.gathered = 0

    def get_state_dict(self, model):
        self.gathered += 1
        return {k: v.clone() for k, v in model.state_dict().items()}

    def unwrap_model(self, model):
        return model

    def wait_for_everyone(self):
        pass


def test_fsdp_branch_saves_the_adapter_and_embedder_from_the_gathered_weights(tmp_path):
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from workbench.llm import softtokens
    from workbench.llm.tiny import build_tiny
    from workbench.llm.sft import save_final_adapter
    base, _ = build_tiny(["a tiny corpus of words", "for a tiny tokenizer"], vocab_size=300)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.soft_embedder = torch.nn.Linear(3, 64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B starts at zero: make the adapter non-trivial
    trainer = SimpleNamespace(accelerator=GatheringAccelerator(), is_fsdp_enabled=True, model=model)
    save_final_adapter(trainer, tmp_path / "adapter", soft_embedder=torch.nn.Linear(3, 64))  # a stale local copy
    assert trainer.accelerator.gathered == 1
    assert distributed.state_digest(load_file(tmp_path / "adapter" / "adapter_model.safetensors")) == \
        distributed.adapter_digest(model)
    saved = torch.load(tmp_path / "adapter" / softtokens.EMBEDDER_FILE, weights_only=True)
    assert distributed.state_digest(saved) == distributed.state_digest(model.soft_embedder.state_dict())
