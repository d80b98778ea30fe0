"""--device: CPU works everywhere, a missing GPU is one clear line; device-aware end-to-end checks.

``MTPEFT_TEST_DEVICE=cuda`` (scripts/gpu_check.sh) runs the device-aware tests on a GPU; by default
they run on the CPU.
"""

import json
import os

import pytest
import torch
import yaml

from mtpeft.cli import main
from mtpeft.device import resolve_device
from mtpeft.errors import MtpeftError
from mtpeft.tasks.base import to_device
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
DEVICE = os.environ.get("MTPEFT_TEST_DEVICE", "cpu")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(MtpeftError, match="unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    with pytest.raises(MtpeftError, match="unknown device 'cuda:x'"):
        resolve_device("cuda:x")


@no_gpu
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path, task_files, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(task_files, tmp_path / "run")))
    for argv in (["train", "--config", str(config), "--device", "cuda"],
                 ["train", "--config", str(config), "--device", "cuda:1"],
                 ["prompt-baseline", "--config", str(config), "--model", "tiny-llama", "--device", "cuda"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mtpeft: error: --device cuda") and "CUDA is not available" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_to_device_moves_nested_batches():
    batch = {"inputs": {"input_ids": torch.ones(2, 3, dtype=torch.long)}, "left": torch.tensor([0]), "ids": ["a"]}
    moved = to_device(batch, torch.device(DEVICE))
    assert moved["inputs"]["input_ids"].device.type == DEVICE and moved["left"].device.type == DEVICE
    assert moved["ids"] == ["a"]


def test_train_evaluate_predict_on_the_device(tmp_path, task_files, capsys):
    """The whole path on --device: training, the reload, evaluate and predict all run there, and
    evaluate on the same device reproduces the run's metrics."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(task_files, tmp_path / "run")))
    assert main(["train", "--config", str(config), "--device", DEVICE]) == 0
    run = tmp_path / "run"
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["device"].startswith(DEVICE)
    metrics = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--device", DEVICE, "-o", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    for split in ("valid", "test"):
        for name, values in metrics[split].items():
            for metric, value in values.items():
                if isinstance(value, float):
                    assert again[split][name][metric] == pytest.approx(value, abs=1e-6), (split, name, metric)
    capsys.readouterr()
    assert main(["predict", str(run), task_files["defect"]["test"], "--task", "defect", "--device", DEVICE]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 8 and all(r.split("\t")[1] in ("0", "1") for r in rows)
