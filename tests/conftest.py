"""Shared fixtures: tiny data files of the four tasks and a private model cache; no network."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from pathlib import Path
from types import ModuleType

import pytest
import torch

# source trees that the analyze/index tests read; their test_*.py files are data, not tests
collect_ignore = ["fixtures"]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tiny backbones are built into a fresh cache, never read from the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MTPEFT_CACHE", str(tmp_path_factory.mktemp("mtpeft-cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a busy 2-core machine
    yield
    torch.set_num_threads(threads)
    mp.undo()


def load_script(name: str) -> ModuleType:
    """A script of scripts/ (not a package) imported as a module, for its tests."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, records: list[dict], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def tiny_task_files(root: Path, n: int = 24, seed: int = 0) -> dict[str, dict]:
    """Small files in the real formats (Devign, BigCloneBench idx pairs, CSN pairs + CoSQA corpus, Flakify)."""
    rng = random.Random(seed)
    funcs = [f"int f{i}(char *s) {{ char b[{i}]; {'strcpy(b, s);' if i % 2 else 'strncpy(b, s, 4);'} return {i}; }}" for i in range(n)]
    defect = [{"idx": i, "func": funcs[i], "target": i % 2} for i in range(n)]
    java = [{"idx": str(100 + i), "func": f"public class BigbenchClone {{ void m{i % 5}() {{ int x = {i % 5}; }} }}"} for i in range(n)]
    pairs = [{"idx1": str(100 + i), "idx2": str(100 + (i + 5) % n), "label": int(i % 5 == (i + 5) % n % 5)} for i in range(n)]
    search = [{"idx": i, "query": f"return the value {i}", "code": f"def value_{i}():\n    return {i}"} for i in range(n)]
    corpus = [{"idx": i, "code": f"def get_{i}(x):\n    return x + {i}"} for i in range(n)]
    queries = [{"idx": f"q{i}", "query": f"add {i} to x", "answer_idx": i} for i in range(0, n, 2)]
    flaky = [{"idx": f"T-test{i}", "full_code": f"@Test public void test{i}() {{ {'Thread.sleep(100);' if i % 4 == 0 else ''} assertEquals({i}, x); }}", "flaky": int(i % 4 == 0)} for i in range(n)]
    rng.shuffle(defect)
    files = {
        "defect": {"train": write_jsonl(root / "defect.jsonl.gz", defect, gz=True), "valid": write_jsonl(root / "defect_v.jsonl", defect[:8]), "test": write_jsonl(root / "defect_t.jsonl", defect[8:16])},
        "clone": {"train": write_jsonl(root / "pairs.jsonl", pairs), "valid": write_jsonl(root / "pairs_v.jsonl", pairs[:8]), "test": write_jsonl(root / "pairs_t.jsonl", pairs[8:16]), "options": {"functions": str(write_jsonl(root / "functions.jsonl", java))}},
        "search": {"train": write_jsonl(root / "search.jsonl", search), "test": write_jsonl(root / "search_t.jsonl", search[:10]), "extra": {"cosqa": {"queries": str(write_jsonl(root / "queries.jsonl", queries)), "corpus": str(write_jsonl(root / "corpus.jsonl", corpus))}}},
        "flaky": {"train": write_jsonl(root / "flaky.jsonl", flaky), "valid": write_jsonl(root / "flaky_v.jsonl", flaky[:12]), "test": write_jsonl(root / "flaky_t.jsonl", flaky[12:])},
    }
    return json.loads(json.dumps(files, default=str))


@pytest.fixture()
def task_files(tmp_path) -> dict[str, dict]:
    return tiny_task_files(tmp_path / "data")


def tiny_config(task_files: dict, output: Path, backbone: str = "tiny-bert", **training) -> dict:
    return {
        "backbone": {"name": backbone, "pooling": "mean", "max_len": 48},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "tasks": task_files,
        "training": {"epochs": 2, "batch_size": 4, "steps_per_epoch": 3, "lr": 1e-3, "progress": False, "seed": 7} | training,
        "output_dir": str(output),
    }


def save_untrained_run(run_dir: Path, task_files: dict, **training) -> Path:
    """A run directory with a randomly perturbed (untrained) tiny-bert model: what inference reads,
    without spending seconds on training."""
    from mtpeft.config import resolve_config, save_config
    from mtpeft.model.build import build_model
    from mtpeft.recipes import build_tasks
    from mtpeft.training.checkpoint import save_checkpoint
    from mtpeft.training.weighting import build_weighting

    # float32 throughout (no bf16 autocast even where the CPU has it): exact comparisons in tests
    config = resolve_config(tiny_config(task_files, run_dir, **({"bf16": False} | training)))
    tasks = build_tasks(config)
    torch.manual_seed(0)
    model, method = build_model(config, tasks)
    with torch.no_grad():  # away from the identity init, so scores differ between functions
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    state = {"tasks": {name: task.state() for name, task in tasks.items()}}
    save_checkpoint(run_dir, model, method, {"loss_weighting": build_weighting("learned_softmax", list(tasks))}, state)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One untrained tiny run shared by the inference, analyze, index and serving tests."""
    root = tmp_path_factory.mktemp("tiny-run")
    return save_untrained_run(root / "run", tiny_task_files(root / "data"))
