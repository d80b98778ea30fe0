"""torchrun-style data parallelism: 2 CPU processes (gloo on 127.0.0.1) train exactly what one
process trains with the same global batch."""

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtpeft.config import resolve_config
from mtpeft.recipes import train
from mtpeft.training import loop
from mtpeft.training.distributed import SINGLE, Distributed, shard, shard_sizes
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_shards_are_contiguous_and_weighted_by_size():
    assert shard_sizes(5, 2) == [3, 2] and shard_sizes(1, 2) == [1, 0]
    batch = list("abcde")
    assert shard(batch, Distributed(0, 2)) == (list("abc"), 3 / 5)
    assert shard(batch, Distributed(1, 2)) == (list("de"), 2 / 5)
    assert shard(list("a"), Distributed(1, 2)) == (list("a"), 0.0)  # a placeholder that counts 0
    assert shard(batch, SINGLE) == (batch, 1.0)


def no_dropout_config(task_files: dict, output, **training) -> dict:
    """Dropout off everywhere (the ranks' dropout masks could not match one process's)."""
    files = json.loads(json.dumps(task_files))
    for name in ("defect", "clone", "flaky"):
        files[name]["options"] = files[name].get("options", {}) | {"dropout": 0.0}
    config = tiny_config(files, output, **training)
    # LoRA on the value projections only: at step 0 the query LoRA's gradients are ~1e-9, float
    # noise, which Adam's first steps (g / (|g| + eps)) blow up to whole learning-rate steps
    config["method"] |= {"dropout": 0.0, "target": ["value"]}
    config["backbone"] |= {"attention_dropout": 0.0, "hidden_dropout": 0.0}
    return config


def record_first_gradients(path: str) -> None:
    """Save rank 0's gradients of the first step, as the optimizer gets them (summed over the
    ranks, clipped): the weights are still equal then, so they must match closely."""
    original = loop.Trainer.train_step

    def recorded(self, state, *args, **kwargs):
        losses = original(self, state, *args, **kwargs)
        if self.dist.main and state.steps == 0:
            grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}
            save_file(grads | {f"weighting.{n}": p.grad.detach().clone() for n, p in self.weighting.named_parameters()}, path)
        return losses

    loop.Trainer.train_step = recorded


def run_rank(rank: int, world: int, port: int, config: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    record_first_gradients(str(Path(config["output_dir"]) / "grads.safetensors"))
    train(resolve_config(config))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_same_weights_as_one(tmp_path, task_files):
    # batch 3 over 2 ranks: shards of 2 and 1; search's 22 training pairs end each pass with a
    # batch of 1, so one rank also runs the empty-shard path
    training = {"batch_size": 3, "epochs": 2, "steps_per_epoch": 2, "save_every_steps": 4, "keep_last": True, "device": "cpu"}
    (tmp_path / "one").mkdir()
    original = loop.Trainer.train_step
    try:
        record_first_gradients(str(tmp_path / "one" / "grads.safetensors"))
        train(resolve_config(no_dropout_config(task_files, tmp_path / "one", **training)))
    finally:
        loop.Trainer.train_step = original
    config = no_dropout_config(task_files, tmp_path / "two", **training)
    context = multiprocessing.get_context("spawn")
    port = free_port()
    ranks = [context.Process(target=run_rank, args=(rank, 2, port, config)) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=300)
    assert [p.exitcode for p in ranks] == [0, 0]
    # the first step's synchronised gradients equal one process's (to float rounding: the shards
    # sum in another order)
    one, two = (load_file(str(tmp_path / name / "grads.safetensors")) for name in ("one", "two"))
    assert one.keys() == two.keys() and any("lora" in k for k in one) and any(k.startswith("weighting.") for k in one)
    assert any(float(one[k].abs().max()) > 0 for k in one if "lora_B" in k)  # (lora_A's are 0 while B is 0)
    # (the tolerance is loose where gradients are sums that largely cancel: the LoRA weights and
    # the defect and search heads differ by up to ~0.4% of their largest entry; a missing
    # all-reduce, a wrong shard weight or search without the other rank's negatives is off by
    # 30-100%. The clone and flaky heads agree to ~1e-6.)
    for key in one:
        scale = float(one[key].abs().max())
        tolerance = 1e-5 if key.startswith(("heads.clone", "heads.flaky")) else 2e-2
        assert float((one[key] - two[key]).abs().max()) <= tolerance * scale + 1e-10, key
    # after all the steps the weights still agree: Adam's g / sqrt(v) magnifies rounding on
    # near-zero gradients, so the bound is loose (LoRA B starts at 0: its norm is how far it moved)
    one, two = (load_file(str(tmp_path / name / "last" / "state.safetensors")) for name in ("one", "two"))
    weights = [k for k in one if k.startswith(("model.", "weighting."))]
    assert weights and set(weights) <= set(two)
    for key in [k for k in weights if "lora_B" in k]:
        assert float((one[key] - two[key]).norm()) <= 0.2 * float(one[key].norm()), key
    ledger_one, ledger_two = (json.loads((tmp_path / n / "ledger.json").read_text()) for n in ("one", "two"))
    # (tokens may differ: clone encodes the distinct methods of each shard, not of the whole batch)
    assert ledger_two["world_size"] == 2 and ledger_one["world_size"] == 1
    history_one, history_two = (json.loads((tmp_path / n / "history.json").read_text()) for n in ("one", "two"))
    assert [r["examples_seen"] for r in history_one] == [r["examples_seen"] for r in history_two]
    for a, b in zip(history_one, history_two):
        for task, loss in a["train_loss"].items():  # the global batch's loss, step by step
            assert b["train_loss"][task] == pytest.approx(loss, rel=1e-4)
