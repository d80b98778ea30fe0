"""Loss weightings on toy problems where the right direction is known, their options, hooks and state."""

from __future__ import annotations

import math

import pytest
import torch

from mtpeft.errors import MtpeftError
from mtpeft.training.weightings import WEIGHTINGS, build_weighting

ALL = ["equal", "learned_softmax", "uncertainty", "loss_normalized", "gradnorm", "famo"]


def test_every_weighting_is_registered_and_starts_as_the_plain_sum():
    assert sorted(ALL) == WEIGHTINGS.names()
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}
    for name in ALL:
        w = build_weighting(name, ["a", "b"])
        assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0}), name
        if name not in ("famo", "uncertainty"):  # famo weighs log-losses, uncertainty adds log-variances
            assert float(w(losses).detach()) == pytest.approx(2.5), name


def test_unknown_or_bad_options_stop_with_a_clear_line():
    with pytest.raises(MtpeftError, match=r"unknown option\(s\) beta for loss weighting 'gradnorm'.*valid: alpha, lr"):
        build_weighting("gradnorm", ["a", "b"], {"beta": 1})
    with pytest.raises(MtpeftError, match="valid: none"):
        build_weighting("equal", ["a", "b"], {"lr": 1})
    with pytest.raises(MtpeftError, match="weighting_options.lr must be a number"):
        build_weighting("famo", ["a", "b"], {"lr": "fast"})
    with pytest.raises(MtpeftError, match="reg_kind must be kl or l2"):
        build_weighting("learned_softmax", ["a", "b"], {"reg_kind": "l1"})
    assert build_weighting("famo", ["a"], {"lr": "1e-2"}).options["lr"] == 0.01  # YAML may give strings


def _train_softmax(options: dict, steps: int = 300) -> dict[str, float]:
    """Constant losses a=2, b=0.5: the softmax gradient always favours the lower loss (b)."""
    w = build_weighting("learned_softmax", ["a", "b"], options)
    opt = torch.optim.AdamW(w.param_groups(lr=1e-4))
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}
    for _ in range(steps):
        opt.zero_grad()
        w(losses).backward()
        opt.step()
    return w.weights()


def test_learned_softmax_drifts_to_the_lowest_loss_and_a_strong_regulariser_keeps_it_near_uniform():
    free = _train_softmax({"lr": 0.05})
    assert free["b"] > 1.9 and free["a"] < 0.1  # collapse onto the easy task (issue 8's finding)
    for kind in ("kl", "l2"):
        held = _train_softmax({"lr": 0.05, "reg": 100.0, "reg_kind": kind})
        assert held["a"] == pytest.approx(1.0, abs=0.1) and held["b"] == pytest.approx(1.0, abs=0.1), kind
        assert held["b"] > held["a"]  # still the same direction, only damped


@pytest.mark.parametrize("name", ["learned_softmax", "uncertainty"])
def test_the_weighting_s_own_learning_rate_is_honoured(name):
    default = build_weighting(name, ["a", "b"]).param_groups(lr=1e-4)
    assert default[0]["lr"] == 1e-4
    own = build_weighting(name, ["a", "b"], {"lr": 0.05})
    groups = own.param_groups(lr=1e-4)
    assert groups[0]["lr"] == 0.05 and groups[0]["weight_decay"] == 0.0
    opt = torch.optim.AdamW(groups)
    own({"a": torch.tensor(2.0), "b": torch.tensor(0.5)}).backward()
    opt.step()
    (param,) = list(own.parameters())
    assert param.abs().tolist() == pytest.approx([0.05, 0.05], rel=1e-3)  # Adam's first step moves by lr


def test_loss_normalized_follows_the_previous_epoch_s_mean_losses():
    w = build_weighting("loss_normalized", ["a", "b", "c"])
    assert w.weights() == pytest.approx({"a": 1, "b": 1, "c": 1})  # first epoch: uniform
    w.end_epoch({"a": 3.0, "b": 1.0, "c": 2.0})
    assert w.weights() == pytest.approx({"a": 1.5, "b": 0.5, "c": 1.0})  # harder task weighs more, sum 3
    assert float(w.term("a", torch.tensor(2.0))) == pytest.approx(3.0)
    w.end_epoch({"a": 1.0, "b": 1.0})  # a task without loss: keep the weights rather than guess
    assert w.weights()["a"] == pytest.approx(1.5)
    assert list(w.parameters()) == [] and "w" in w.state_dict()


def _quadratic_run(name: str, options: dict | None = None, steps: int = 60) -> tuple[dict[str, float], list]:
    """Two quadratic tasks on one shared parameter, the second scaled 100x smaller (loss and
    gradient): per-task backward, observe_gradients, SGD step, after_step, as the loop does."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.zeros(4))
    targets = {"big": torch.tensor([1.0, -1.0, 2.0, 0.5]), "small": torch.tensor([-1.0, 1.0, 0.0, 2.0])}
    scale = {"big": 1.0, "small": 0.01}
    w = build_weighting(name, ["big", "small"], options)
    opt = torch.optim.SGD([theta], lr=0.01)
    history = []
    for _ in range(steps):
        losses = {}
        for task in ("big", "small"):
            loss = scale[task] * (theta - targets[task]).pow(2).sum()
            w.term(task, loss).backward()
            w.observe_gradients(task, [theta])
            losses[task] = loss.detach()
        opt.step()
        opt.zero_grad()
        w.after_step(losses)
        history.append(w.weights())
    return w.weights(), history


def test_gradnorm_raises_the_weight_of_the_task_with_the_smaller_gradient_norm():
    final, history = _quadratic_run("gradnorm")
    assert final["small"] > 1.5 > 1.0 > final["big"]
    assert all(sum(h.values()) == pytest.approx(2.0) for h in history)  # renormalised every step
    assert all(min(h.values()) > 0 for h in history)


def test_gradnorm_measures_each_task_s_own_gradient_by_differencing():
    theta = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    w = build_weighting("gradnorm", ["a", "b"])
    (3 * theta.sum()).backward()          # grad (3, 3): norm sqrt(18)
    w.observe_gradients("a", [theta])
    (theta * torch.tensor([4.0, 0.0])).sum().backward()  # its own grad (4, 0) on top of (3, 3)
    w.observe_gradients("b", [theta])
    assert w._norms == pytest.approx({"a": math.sqrt(18), "b": 4.0})


def test_famo_raises_the_weight_of_the_slower_improving_task():
    w = build_weighting("famo", ["fast", "slow"])
    for t in range(50):
        w.after_step({"fast": torch.tensor(math.exp(-0.1 * t)), "slow": torch.tensor(math.exp(-0.01 * t))})
    weights = w.weights()
    assert weights["slow"] > 1.2 and weights["fast"] < 0.8
    assert sum(weights.values()) == pytest.approx(2.0)


def test_famo_term_gradient_is_z_over_c_times_loss():
    """d/dtheta of the term = n z_i / (c L_i) dL_i/dtheta, c = sum_j z_j / L_j (last losses)."""
    w = build_weighting("famo", ["a", "b"])
    w.logits.copy_(torch.tensor([0.4, -0.4]))
    w.after_step({"a": torch.tensor(2.0), "b": torch.tensor(0.5)})  # last losses; no delta yet
    x = torch.tensor(3.0, requires_grad=True)
    loss_a = x * 2.0 / 3.0  # L_a = 2 at x = 3, dL_a/dx = 2/3
    w.term("a", loss_a).backward()
    z = torch.softmax(w.logits, 0)
    c = z[0] / 2.0 + z[1] / 0.5
    assert float(x.grad) == pytest.approx(float(2 * z[0] / (c * 2.0) * (2.0 / 3.0)), rel=1e-5)


def test_famo_on_quadratics_moves_weight_toward_the_slow_task():
    final, _ = _quadratic_run("famo", steps=80)
    assert final["small"] > final["big"]


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_restores_the_weights(name):
    a = build_weighting(name, ["x", "y"])
    _quadratic_run_into(a)
    b = build_weighting(name, ["x", "y"])
    b.load_state_dict(a.state_dict(), strict=True)
    assert b.weights() == pytest.approx(a.weights())
    if name in ("gradnorm", "famo"):
        assert any(k.startswith("adam_") for k in a.state_dict())  # optimizer moments resume too


def _quadratic_run_into(w) -> None:
    theta = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([theta, *[p for g in w.param_groups(0.1) for p in g["params"]]], lr=0.1)
    for step in range(5):
        losses = {}
        for task, scale in (("x", 1.0), ("y", 0.1)):
            loss = scale * (theta - 1 - step).pow(2).sum()
            w.term(task, loss).backward()
            w.observe_gradients(task, [theta])
            losses[task] = loss.detach()
        opt.step()
        opt.zero_grad()
        w.after_step(losses)
    w.end_epoch({"x": 2.0, "y": 1.0})


@pytest.mark.parametrize("name, options", [("gradnorm", {"lr": 0.1}), ("learned_softmax", {"lr": 0.05, "reg": 0.1}),
                                           ("famo", {"lr": 0.1}), ("loss_normalized", {})])
def test_training_logs_the_weights_of_every_step_and_plots_them(tmp_path, task_files, name, options):
    """Through the real loop: hooks called, weights per step in history.json + TensorBoard,
    a PNG, and the checkpoint (weighting buffers included) reloads strictly."""
    import json

    from conftest import tiny_config
    from mtpeft.config import resolve_config
    from mtpeft.recipes import load_run, train

    files = {t: task_files[t] for t in ("defect", "flaky")}
    config = resolve_config(tiny_config(files, tmp_path / "run", weighting=name, weighting_options=options))
    train(config)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    rows = [row for record in history for row in record["weights"]]
    assert [r["step"] for r in rows] == list(range(1, 7))  # 2 epochs x 3 steps
    assert all(sum(r[t] for t in ("defect", "flaky")) == pytest.approx(2.0, abs=1e-4) for r in rows)
    assert rows[-1]["defect"] != pytest.approx(1.0, abs=1e-4)  # the weights moved
    png = tmp_path / "run" / "loss_weights.png"
    assert png.stat().st_size > 10_000
    assert any(p.name.startswith("events") for p in (tmp_path / "run" / "tb").iterdir())
    load_run(tmp_path / "run")  # strict load of the saved weighting state


def test_choosing_another_weighting_drops_the_file_s_weighting_options():
    from mtpeft.config import resolve_config

    data = {"training": {"weighting": "learned_softmax", "weighting_options": {"reg": 0.1}}}
    assert resolve_config(data).training.weighting_options == {"reg": 0.1}
    config = resolve_config(data, [("training.weighting", "gradnorm"), ("training.weighting_options.alpha", 0.5)])
    assert config.training.weighting_options == {"alpha": 0.5}


def test_a_bad_weighting_option_stops_train_before_loading_anything(tmp_path, task_files, monkeypatch):
    from conftest import tiny_config
    from mtpeft import recipes
    from mtpeft.config import resolve_config

    monkeypatch.setattr(recipes, "load_data", lambda *a, **k: pytest.fail("data loaded before the options were checked"))
    config = resolve_config(tiny_config(task_files, tmp_path / "run", weighting="famo", weighting_options={"lr": 0.1, "beta": 2}))
    with pytest.raises(MtpeftError, match=r"unknown option\(s\) beta for loss weighting 'famo'"):
        recipes.train(config)
