"""Resume: a run killed after its first "last" checkpoint continues to exactly the same result."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtpeft.cli import main
from mtpeft.config import resolve_config
from mtpeft.device import cpu_facts, cpu_label
from mtpeft.recipes import ledger_for, train
from mtpeft.runs import Ledger
from mtpeft.training import loop
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

# MTPEFT_TEST_DEVICE=cuda (scripts/gpu_check.sh) runs these on a GPU
RESUMABLE = {"epochs": 3, "steps_per_epoch": 4, "save_every_steps": 1, "keep_last": True, "validate_every": 3,
             "device": os.environ.get("MTPEFT_TEST_DEVICE", "cpu")}


def assert_same_tensors(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.allclose(left[key].float(), right[key].float(), atol=1e-6, rtol=0), key


def assert_same_run(a: Path, b: Path) -> None:
    """metrics.json, history.json, the best checkpoint and the final state (weights, optimizer,
    loss weighting, random states) of two runs are equal."""
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    assert json.loads((a / "history.json").read_text()) == json.loads((b / "history.json").read_text())
    assert_same_tensors(a / "checkpoint" / "heads.safetensors", b / "checkpoint" / "heads.safetensors")
    assert_same_tensors(a / "checkpoint" / "adapter" / "adapter_model.safetensors", b / "checkpoint" / "adapter" / "adapter_model.safetensors")
    assert_same_tensors(a / "last" / "state.safetensors", b / "last" / "state.safetensors")
    state_a, state_b = (json.loads((d / "last" / "state.json").read_text()) for d in (a, b))
    assert state_a.pop("ledger")["sittings"] == 1 and state_b.pop("ledger")["sittings"] == 2  # wall times differ
    assert state_a == state_b


def before_step(monkeypatch, step: int, action) -> object:
    """Run ``action`` at the start of training step ``step``; returns the unpatched train_step."""
    original = loop.Trainer.train_step
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            action()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "train_step", patched)
    return original


def test_resume_after_a_crash_in_process_gives_the_same_run(tmp_path, task_files, monkeypatch):
    train(resolve_config(tiny_config(task_files, tmp_path / "a", **RESUMABLE)))
    def crash() -> None:
        raise KeyboardInterrupt  # as if killed: steps 1-6 are in last/, step 7 is lost

    original = before_step(monkeypatch, 7, crash)
    with pytest.raises(KeyboardInterrupt):
        train(resolve_config(tiny_config(task_files, tmp_path / "b", **RESUMABLE)))
    assert json.loads((tmp_path / "b" / "last" / "state.json").read_text())["progress"]["steps"] == 6
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    assert main(["train", "--resume", str(tmp_path / "b")]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")
    # the cost covers both sittings: the first one's time came through last/
    first = json.loads((tmp_path / "a" / "ledger.json").read_text())
    both = json.loads((tmp_path / "b" / "ledger.json").read_text())
    assert first["sittings"] == 1 and "this_sitting" not in first
    assert both["sittings"] == 2 and both["whole_run_timed"]
    loop_seconds = both["wall_seconds"]["train_and_validate"]
    assert loop_seconds > both["this_sitting"]["wall_seconds"]["train_and_validate"] > 0
    assert both["wall_seconds"]["load_model"] > both["this_sitting"]["wall_seconds"]["load_model"]


def test_the_ledger_adds_the_earlier_sittings_and_counts_a_running_phase_up_to_now():
    ledger = Ledger(earlier={"wall_seconds": {"train_and_validate": 100.0, "load_model": 2.0}, "peak_rss_mb": 1e9,
                             "sittings": 2, "cpus": ["Some Other CPU (avx2)"]})
    with ledger.phase("load_model"):
        pass
    with ledger.phase("train_and_validate"):
        time.sleep(0.05)
        carried = ledger.carry()  # as save_last does, mid-training
    assert carried["sittings"] == 3 and carried["peak_rss_mb"] == 1e9
    assert 100.04 < carried["wall_seconds"]["train_and_validate"] < 100.0 + ledger.phases["train_and_validate"] + 0.01
    assert carried["wall_seconds"]["load_model"] == round(2.0 + ledger.phases["load_model"], 3)
    out = ledger.to_dict()
    assert out["sittings"] == 3 and out["peak_rss_mb"] == 1e9 and out["this_sitting"]["peak_rss_mb"] < 1e9
    assert out["wall_seconds"]["train_and_validate"] == round(100.0 + ledger.phases["train_and_validate"], 3)
    # the run's wall time is that of every CPU it trained on; the ledger names this sitting's too
    assert out["cpus"] == ["Some Other CPU (avx2)", cpu_label(cpu_facts())] and out["cpu"] == cpu_facts()["cpu"]


def test_tokens_of_an_untimed_sitting_stay_untimed_in_every_later_sitting():
    # sitting 2 resumes from a last/ written before checkpoints carried a ledger (100 tokens)
    second = ledger_for(({}, {"progress": {"tokens": 100}}))
    assert second.untimed_tokens == 100
    # sitting 3 resumes from the last/ that sitting 2 wrote: it carries a ledger now, but the
    # first 100 tokens still have no time (a resumed run once reported 4.7x its real speed so)
    third = ledger_for(({}, {"progress": {"tokens": 250}, "ledger": second.carry()}))
    assert third.untimed_tokens == 100 and third.earlier["sittings"] == 1
    timed_from_start = ledger_for(({}, {"progress": {"tokens": 250}, "ledger": Ledger().carry()}))
    assert timed_from_start.untimed_tokens == 0 and ledger_for(None).untimed_tokens == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_last_written_and_resume_loses_nothing(tmp_path, task_files, monkeypatch, capsys, signum):
    # no periodic checkpoint during training: only the stop writes last/ before the end
    settings = RESUMABLE | {"save_every_steps": None, "save_every_minutes": 60}
    train(resolve_config(tiny_config(task_files, tmp_path / "a", **settings)))
    # as `kill` or Ctrl-C would, in the middle of step 5
    original = before_step(monkeypatch, 5, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(KeyboardInterrupt):
        train(resolve_config(tiny_config(task_files, tmp_path / "b", **settings)))
    assert json.loads((tmp_path / "b" / "last" / "state.json").read_text())["progress"]["steps"] == 5
    assert f"stopped by {signal.Signals(signum).name} after step 5" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    assert main(["train", "--resume", str(tmp_path / "b")]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_a_stop_signal_in_the_test_pass_of_a_background_run_ends_it_and_resume_evaluates_again(tmp_path, task_files, monkeypatch):
    """Started with `nohup ... &`, a process inherits SIGINT ignored; the grid stops its cells with
    SIGINT. A cell past its training loop (in its test pass) must still stop: exit 130, resumable."""
    from mtpeft import recipes

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(task_files, tmp_path / "run", **RESUMABLE)))
    original = recipes.evaluate_sets

    def interrupted_test_pass(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # as the grid does; delivered before the next bytecode
        return original(*args, **kwargs)

    monkeypatch.setattr(recipes, "evaluate_sets", interrupted_test_pass)
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert main(["train", "--config", str(config), "--no-progress"]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the inherited handler is back
    finally:
        signal.signal(signal.SIGINT, inherited)
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists() and (run / "last" / "state.json").exists()
    monkeypatch.setattr(recipes, "evaluate_sets", original)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "test" in json.loads((run / "metrics.json").read_text())


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtpeft", "train", *args, "--no-progress"]


def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path, task_files):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(task_files, tmp_path / "unused", **RESUMABLE)))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    whole = subprocess.Popen(cli("--config", str(config), "--output", str(tmp_path / "whole")), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = open(tmp_path / "killed.err", "w")
    killed = subprocess.Popen(cli("--config", str(config), "--output", str(tmp_path / "killed")), env=env,
                              stdout=subprocess.DEVNULL, stderr=errors)
    target = random.Random().randint(1, 9)  # any step after the first last/ checkpoint (12 steps in all)
    state = tmp_path / "killed" / "last" / "state.json"
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["progress"]["steps"] >= target:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    assert killed.poll() is None, "the run ended before it could be killed: " + (tmp_path / "killed.err").read_text()[-2000:]
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    killed_at = json.loads(state.read_text())["progress"]["steps"]
    assert killed_at < 12 and not (tmp_path / "killed" / "metrics.json").exists()
    resumed = subprocess.run(cli("--resume", str(tmp_path / "killed")), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]
    assert_same_run(tmp_path / "whole", tmp_path / "killed")


def test_resume_refuses_a_changed_config_and_a_run_without_last(tmp_path, task_files, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(task_files, tmp_path / "run", epochs=1)))
    assert main(["train", "--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--lr", "0.5"]) == 2
    assert "config differs from the run's saved config.yaml at training.lr (0.001 -> 0.5)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 2  # finished: last/ removed
    assert "no resumable checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_run_moved_to_another_machine_resumes_with_its_data_under_the_new_root(tmp_path):
    """``vars.data`` says where the data lives, not what the run is: resuming with another root is
    no config change, and the run's own ``${data}`` paths are then read under that root."""
    from mtpeft.config import save_config
    from mtpeft.errors import MtpeftError
    from mtpeft.recipes import resume_config

    tasks = {"defect": {"train": "${data}/devign/train.jsonl", "valid": "${data}/devign/valid.jsonl"}}
    run = tmp_path / "run"
    run.mkdir()
    save_config(resolve_config({"tasks": tasks, "vars": {"data": "old/root"}, "output_dir": str(run)}), run / "config.yaml")
    moved = {"tasks": tasks, "vars": {"data": "new/root"}, "output_dir": str(run)}
    resumed = resume_config(run, resolve_config(moved))
    assert resumed.tasks["defect"].train == "new/root/devign/train.jsonl"
    assert resumed.to_dict()["tasks"] == tasks  # what it saves again stays relative to ${data}
    with pytest.raises(MtpeftError, match=r"training\.lr"):
        resume_config(run, resolve_config(moved | {"training": {"lr": 0.5}}))
