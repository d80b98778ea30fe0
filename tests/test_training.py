"""Samplers, loss weighting, bucketing, config overrides and checkpoint round trips."""

import shutil
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from mtpeft.config import MethodConfig, resolve_config
from mtpeft.errors import MtpeftError
from mtpeft.training.batching import BucketedBatches
from mtpeft.training.samplers import build_sampler
from mtpeft.training.weightings import build_weighting

SIZES = {"defect": 30, "clone": 10, "search": 5, "flaky": 5}


def test_round_robin_visits_every_task_each_step_for_the_largest_task():
    sampler = build_sampler("round_robin", SIZES, seed=0, temperature=1.0)
    steps = list(sampler.epoch())
    assert len(steps) == 30
    assert all(sorted(step) == sorted(SIZES) for step in steps)


@pytest.mark.parametrize("name, temperature, power", [("proportional", 1.0, 1.0), ("temperature", 2.0, 0.5), ("temperature", 1000.0, 0.001)])
def test_weighted_samplers_follow_their_proportions(name, temperature, power):
    sampler = build_sampler(name, SIZES, seed=1, temperature=temperature)
    counts = Counter(step[0] for _ in range(40) for step in sampler.epoch())
    total = sum(counts.values())
    assert total == 40 * sum(SIZES.values())
    expected = {t: n ** power for t, n in SIZES.items()}
    norm = sum(expected.values())
    for task, weight in expected.items():
        assert counts[task] / total == pytest.approx(weight / norm, abs=0.02)


def test_unknown_sampler_lists_valid_ones():
    with pytest.raises(MtpeftError, match="valid samplers: proportional, round_robin, temperature"):
        build_sampler("random", SIZES, 0, 1.0)


@pytest.mark.parametrize("name", ["learned_softmax", "uncertainty"])
def test_learnable_loss_weights_receive_gradients(name):
    weighting = build_weighting(name, ["a", "b"])
    losses = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(0.5, requires_grad=True)}
    weighting(losses).backward()
    (param,) = list(weighting.parameters())
    assert param.grad is not None and torch.all(param.grad != 0)
    # the larger loss pulls its weight down (softmax) / its log-variance up (uncertainty)
    assert (param.grad[0] > param.grad[1]) if name == "learned_softmax" else (param.grad[0] < param.grad[1])


def test_learned_softmax_starts_as_the_plain_sum():
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}
    assert build_weighting("learned_softmax", ["a", "b"])(losses).item() == pytest.approx(2.5)
    assert float(build_weighting("equal", ["a", "b"])(losses)) == pytest.approx(2.5)
    assert list(build_weighting("equal", ["a"]).parameters()) == []


def test_bucketed_batches_cover_everything_and_group_lengths():
    examples = [("x" * n) for n in range(100)]
    batches = BucketedBatches(examples, batch_size=10, length=len, seed=0, window=100)
    one_pass = batches.one_pass()
    assert sorted(len(e) for b in one_pass for e in b) == list(range(100))
    assert all(max(map(len, b)) - min(map(len, b)) == 9 for b in one_pass)  # sorted window: neighbours together
    assert len(batches) == 10
    stream = iter(batches)
    assert len([next(stream) for _ in range(25)]) == 25  # cycles (smaller tasks are resampled)


def test_config_overrides_and_unknown_keys():
    config = resolve_config({"tasks": {"defect": {"train": "${data}/d.jsonl"}}}, [("training.epochs", 5), ("method.r", 8), ("vars.data", "/x")])
    assert config.training.epochs == 5
    assert config.method.options == {"r": 8}
    assert config.tasks["defect"].train == "/x/d.jsonl"
    with pytest.raises(MtpeftError, match="unknown key\\(s\\) epoch in config section 'training'"):
        resolve_config({"training": {"epoch": 3}})


@pytest.mark.parametrize("name", ["equal", "learned_softmax", "uncertainty"])
def test_per_task_backward_equals_backward_of_the_weighted_sum(name):
    """The loop back-propagates each task's term separately; gradients must equal the sum's."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(3, 1)
    x = {"a": torch.randn(4, 3), "b": torch.randn(4, 3)}

    def grads(per_task: bool):
        shared.zero_grad()
        weighting = build_weighting(name, ["a", "b"])
        with torch.no_grad():
            for p in weighting.parameters():
                p.copy_(torch.tensor([0.3, -0.2]))
        losses = {t: shared(v).pow(2).mean() for t, v in x.items()}
        if per_task:
            for t, loss in losses.items():
                weighting.term(t, loss).backward()
        else:
            weighting(losses).backward()
        return [shared.weight.grad.clone()] + [p.grad.clone() for p in weighting.parameters()]

    for g1, g2 in zip(grads(True), grads(False)):
        assert torch.allclose(g1, g2, atol=1e-6)


def test_choosing_another_method_drops_the_file_s_method_options():
    data = {"method": {"name": "lora", "r": 16, "alpha": 32}}
    assert resolve_config(data, [("method.r", 8)]).method.options == {"r": 8, "alpha": 32}
    config = resolve_config(data, [("method.name", "serial_adapter"), ("method.bottleneck", 32)])
    assert (config.method.name, config.method.options) == ("serial_adapter", {"bottleneck": 32})
    # a whole section (`--set 'method={name: full}'`) or a bare name chooses that method, not the default
    assert resolve_config(data, [("method", {"name": "full"})]).method == MethodConfig("full", {})
    assert resolve_config(data, [("method", "prefix"), ("method.virtual_tokens", 8)]).method == MethodConfig("prefix", {"virtual_tokens": 8})
    assert resolve_config(data, [("method", {"name": "lora", "r": 4})]).method.options == {"r": 4}


def test_balanced_batches_hold_the_asked_share_of_rare_positives():
    from mtpeft.tasks.binary import Example
    from mtpeft.training.batching import BalancedBatches, build_stream

    examples = [Example(str(i), "x" * (i % 7), int(i % 25 == 0)) for i in range(500)]  # 4% positives
    stream = build_stream(examples, 16, lambda e: len(e.text), 0, 50, positive_fraction=0.25)
    assert isinstance(stream, BalancedBatches) and len(stream) == 32
    batches = [b for _, b in zip(range(40), stream)]
    assert all(sum(e.label for e in b) == 4 and len(b) == 16 for b in batches)
    seen = {e.id for b in batches for e in b if e.label}
    assert len(seen) == 20  # every positive is shown, not just a few
    with pytest.raises(MtpeftError, match="both classes"):
        BalancedBatches([e for e in examples if not e.label], 16, len, 0, 0.25, lambda e: e.label)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile needs a C compiler on CPU")
def test_training_with_a_compiled_encoder_matches_eager_training(tmp_path, task_files, monkeypatch):
    import torch._inductor.config as inductor

    from mtpeft.recipes import train
    from tests.conftest import tiny_config

    # inductor draws dropout masks from its own generator; eager's draws make the runs comparable
    monkeypatch.setattr(inductor, "fallback_random", True)
    runs = {}
    for compiled in (False, True):
        config = resolve_config(tiny_config(task_files, tmp_path / str(compiled), bf16=False, compile=compiled,
                                            epochs=1, steps_per_epoch=4))
        runs[compiled] = train(config)
    eager, fast = (load_file(str(tmp_path / str(c) / "checkpoint" / "adapter" / "adapter_model.safetensors")) for c in (False, True))
    assert eager.keys() == fast.keys()  # the checkpoint keeps the eager model's parameter names
    for key in eager:
        assert torch.allclose(eager[key], fast[key], atol=1e-4), key
    assert runs[True]["metrics"]["test"].keys() == runs[False]["metrics"]["test"].keys()
