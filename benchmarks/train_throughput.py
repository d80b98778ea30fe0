"""Training throughput: the loop a user writes by hand against mtpeft's training step, in one process.

Variants are built once, then measured in interleaved rounds (every variant once per round), so a
busy shared machine slows them alike; each variant's best round is reported. Useful tokens are
non-padding tokens. MFU divides the achieved FLOP/s by a matmul of the model's own shapes measured
in the same run (bf16 where the CPU has native bf16, fp32 otherwise).

    python benchmarks/train_throughput.py --data ../shared/data --out results/perf

FLOPs per useful token (documented estimate, not a profile): forward 2*N + attention 4*L*T*h;
backward with a frozen backbone computes input gradients (2*N + 4*L*T*h again, the attention
counted twice for its two matmuls) plus weight gradients of the trainable parameters only
(2*N_trainable). N = non-embedding backbone weights; T = the padded length of the batch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine  # noqa: E402

from mtpeft.allocator import configure_allocator  # noqa: E402
from mtpeft.config import load_yaml, resolve_config  # noqa: E402
from mtpeft.data import SkipCounter  # noqa: E402
from mtpeft.model.backbone import minilm_dir  # noqa: E402
from mtpeft.model.build import build_model  # noqa: E402
from mtpeft.model.precision import bf16_supported  # noqa: E402
from mtpeft.recipes import build_tasks, load_data  # noqa: E402
from mtpeft.training.batching import BucketedBatches  # noqa: E402
from mtpeft.training.loop import count_tokens  # noqa: E402
from mtpeft.training.weighting import build_weighting  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def machine_with_bf16() -> dict[str, Any]:
    """The shared machine facts plus whether this CPU computes bf16 natively (for the MFU ceiling)."""
    facts = machine()
    return facts | {"flags": facts["cpu_flags"], "threads": facts["torch_threads"], "native_bf16": bf16_supported()}


def matmul_gflops(dtype: torch.dtype, m: int = 4096, k: int = 384, n: int = 1536, seconds: float = 2.0) -> float:
    """GFLOP/s of a matmul of the model's own shapes (tokens x hidden . hidden x intermediate)."""
    a, b = torch.randn(m, k, dtype=dtype, device=DEVICE), torch.randn(k, n, dtype=dtype, device=DEVICE)
    for _ in range(3):
        a @ b
    synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    synchronize()
    return 2 * m * k * n * count / (time.perf_counter() - start) / 1e9


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Variant:
    name: str
    step: Callable[[], tuple[int, int]]  # one optimisation step -> (useful tokens, padded tokens x layers proxy)
    flops_per_token: Callable[[int], float]  # padded length -> FLOPs per useful token
    note: str = ""
    rounds: list[dict[str, float]] = field(default_factory=list)


def non_embedding_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "lora_" not in n)


def flops_model(n_weights: int, n_trainable_path: int, layers: int, hidden: int) -> Callable[[int], float]:
    def per_token(length: int) -> float:
        attention = 4 * layers * length * hidden
        return (2 * n_weights + attention) * 2 + 2 * n_trainable_path

    return per_token


# ---- the naive loop -------------------------------------------------------------------------
def devign_sample(data: Path, n: int, seed: int) -> list[tuple[str, int]]:
    """Functions sampled across the whole file (it is ordered FFmpeg then QEMU)."""
    from mtpeft.data import read_jsonl

    rows = [(r.data["func"], int(r.data["target"])) for r in read_jsonl(data / "defect" / "devign_train.jsonl.gz", SkipCounter())]
    return random.Random(seed).sample(rows, n)


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


DEVICE = torch.device("cpu")


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def naive_variant(examples: list[tuple[str, int]], bf16: bool) -> Variant:
    """all-MiniLM-L6-v2 + peft LoRA r16 on query/value, CLS head, fixed padding to 256, batch 8."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    base = AutoModel.from_pretrained(minilm_dir())  # eval mode, as from_pretrained returns it
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=["query", "value"]))
    model.to(DEVICE)
    head = nn.Linear(base.config.hidden_size, 1).to(DEVICE)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    position = [0]

    def step() -> tuple[int, int]:
        batch = [examples[(position[0] + i) % len(examples)] for i in range(8)]
        position[0] += 8
        enc = to_device(dict(tokenizer([t for t, _ in batch], truncation=True, max_length=256, padding="max_length", return_tensors="pt")), DEVICE)
        labels = torch.tensor([float(y) for _, y in batch], device=DEVICE)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
            cls = model(**enc).last_hidden_state[:, 0]
            loss = nn.functional.binary_cross_entropy_with_logits(head(cls).squeeze(-1).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(enc["attention_mask"].sum()), 256

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fpt = flops_model(non_embedding_params(model), trainable, base.config.num_hidden_layers, base.config.hidden_size)
    name = "naive loop, bf16 autocast" if bf16 else "naive loop, fp32"
    return Variant(name, step, fpt, "MiniLM + peft LoRA r16 q/v, CLS head, pad to 256, batch 8, Devign")


# ---- mtpeft's training step -----------------------------------------------------------------
def mtpeft_variant(name: str, data: Path, tasks: list[str], overrides: list[tuple[str, Any]], budget: int, note: str,
                   compiled: bool = False) -> Variant:
    """The same work as one step of ``training/loop.py``: per task collate, loss under autocast,
    the weighted term back-propagated at once; then clip, AdamW, schedule."""
    raw = load_yaml(ROOT / "configs" / "full.yaml")
    raw["tasks"] = {t: raw["tasks"][t] for t in tasks}
    config = resolve_config(raw, [("vars.data", str(data)), ("training.max_train_per_task", budget),
                                  ("training.max_eval_per_task", 1), ("training.progress", False), *overrides])
    task_objects = build_tasks(config)
    loaded, _ = load_data(config, task_objects, with_train=True)
    model, _ = build_model(config, task_objects)
    model.to(DEVICE)
    t = config.training
    weighting = build_weighting(t.weighting, list(task_objects))
    streams = {}
    for i, (task_name, task) in enumerate(task_objects.items()):
        task.prepare(loaded[task_name].train)
        streams[task_name] = iter(BucketedBatches(loaded[task_name].train, t.batch_size, task.text_length, t.seed + i, t.bucket_window))
    params = [p for p in model.parameters() if p.requires_grad] + list(weighting.parameters())
    optimizer = torch.optim.AdamW(params, lr=t.lr)
    bf16 = t.bf16 and (DEVICE.type == "cuda" or bf16_supported())
    tokenizer = model.backbone.tokenizer
    model.train()

    def step() -> tuple[int, int]:
        useful, padded = 0, 0
        for task_name, task in task_objects.items():
            batch = to_device(task.collate(next(streams[task_name]), tokenizer, config.backbone.max_len), DEVICE)
            useful += count_tokens(batch)
            padded = max(padded, max(v["input_ids"].shape[1] for v in (batch.get("inputs"), batch.get("query"), batch.get("code")) if v))
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
                loss = task.loss(model, batch).float()
            weighting.term(task_name, loss).backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return useful, padded

    backbone = model.backbone.model
    if compiled:
        # the encoder's forward only: parameter names (and so checkpoints) stay those of the eager model
        backbone.forward = torch.compile(backbone.forward, dynamic=True)
    cfg = backbone.config
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    fpt = flops_model(non_embedding_params(backbone), trainable, cfg.num_hidden_layers, cfg.hidden_size)
    return Variant(name, step, fpt, note)


FP32 = [("training.bf16", False)]
# defect alone, fp32: the recipe's LoRA against its parts and full fine-tuning (results/perf/lora_vs_full)
LORA_VS_FULL: dict[str, tuple[list[tuple[str, Any]], str, bool]] = {  # name: (overrides, note, compiled)
    "mtpeft defect, fp32, torch.compile": (FP32, "LoRA, compiled", True),
    "mtpeft defect, LoRA dropout 0, fp32": (FP32 + [("method.dropout", 0.0)], "LoRA without its input dropout", False),
    "mtpeft defect, LoRA on query/value only, fp32": (FP32 + [("method.target", "query,value")], "12 LoRA sites instead of 36", False),
    "mtpeft defect, full fine-tuning, fp32": (FP32 + [("method", {"name": "full"})], "every weight trains", False),
    "mtpeft defect, full fine-tuning, fp32, torch.compile": (FP32 + [("method", {"name": "full"})], "every weight trains, compiled", True),
}


def defect_variant(name: str, data: Path, budget: int) -> Variant:
    overrides, note, compiled = LORA_VS_FULL[name]
    return mtpeft_variant(name, data, ["defect"], overrides, budget, note, compiled=compiled)


def measure(variant: Variant, seconds: float, warmup_steps: int) -> dict[str, float]:
    for _ in range(warmup_steps):
        variant.step()
    gc.collect()
    before = rss_mb()
    useful = steps = 0
    flops = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        tokens, length = variant.step()
        useful += tokens
        flops += tokens * variant.flops_per_token(length)
        steps += 1
    synchronize()
    wall = time.perf_counter() - start
    return {"useful_tokens_per_s": useful / wall, "gflops": flops / wall / 1e9, "steps": steps, "seconds": wall,
            "rss_mb_before": before, "rss_mb_after": rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per variant per round")
    parser.add_argument("--budget", type=int, default=512, help="training examples per task loaded for mtpeft variants")
    parser.add_argument("--only", default=None, help="semicolon-separated variant names")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    configure_allocator()  # what the mtpeft command does at start
    torch.manual_seed(0)
    facts = machine_with_bf16()
    print(json.dumps(facts), flush=True)
    four = ["defect", "clone", "search", "flaky"]
    before = [("backbone.attention_dropout", None), ("backbone.frozen_bf16", False)]
    pad64 = [(f"tasks.{t}.options.pad_multiple", 64) for t in four]
    devign = devign_sample(args.data, 2000, 0)
    frozen = [("backbone.frozen_bf16", True)]  # off by default since results/perf's first run, so named here
    autocast = [("backbone.frozen_bf16", False)]  # bf16 autocast over fp32 weights
    builders: dict[str, Callable[[str], Variant]] = {
        "naive loop, fp32": lambda n: naive_variant(devign, bf16=False),
        "naive loop, bf16 autocast": lambda n: naive_variant(devign, bf16=True),
        "mtpeft defect, before": lambda n: mtpeft_variant(n, args.data, ["defect"], before, args.budget, "attention dropout 0.1, bf16 autocast over fp32 weights"),
        "mtpeft defect, fp32": lambda n: mtpeft_variant(n, args.data, ["defect"], FP32, args.budget, "attention dropout 0, fp32"),
        **{name: partial(defect_variant, data=args.data, budget=args.budget) for name in LORA_VS_FULL},
        "mtpeft 4 tasks, before": lambda n: mtpeft_variant(n, args.data, four, before, args.budget, "attention dropout 0.1, bf16 autocast over fp32 weights"),
        "mtpeft 4 tasks, attention dropout 0, bf16 autocast": lambda n: mtpeft_variant(n, args.data, four, autocast, args.budget, "lever: attention dropout"),
        "mtpeft 4 tasks, attention dropout 0, fp32": lambda n: mtpeft_variant(n, args.data, four, FP32, args.budget, "lever: attention dropout, no autocast"),
        "mtpeft 4 tasks, frozen bf16 weights": lambda n: mtpeft_variant(n, args.data, four, frozen, args.budget, "attention dropout 0 + frozen weights stored in bf16"),
        "mtpeft 4 tasks, frozen bf16 weights + pad to x64": lambda n: mtpeft_variant(n, args.data, four, frozen + pad64, args.budget, "lever: padding multiples"),
        "mtpeft 4 tasks, fp32 + pad to x64": lambda n: mtpeft_variant(n, args.data, four, FP32 + pad64, args.budget, "lever: padding multiples, no autocast"),
        "mtpeft 4 tasks, fp32, torch.compile": lambda n: mtpeft_variant(n, args.data, four, FP32, args.budget, "lever: torch.compile(dynamic=True) of the encoder", compiled=True),
        "mtpeft 4 tasks, fp32 + pad to x64, torch.compile": lambda n: mtpeft_variant(n, args.data, four, FP32 + pad64, args.budget, "lever: torch.compile over 4 padded lengths", compiled=True),
        "mtpeft 4 tasks, bf16 autocast, torch.compile": lambda n: mtpeft_variant(n, args.data, four, autocast, args.budget, "lever: torch.compile under bf16 autocast", compiled=True),
        "mtpeft 4 tasks, frozen bf16 weights + pad to x64, torch.compile": lambda n: mtpeft_variant(n, args.data, four, frozen + pad64, args.budget, "levers: frozen bf16 weights, padding, torch.compile", compiled=True),
        "mtpeft 4 tasks, fp32, batch 32": lambda n: mtpeft_variant(n, args.data, four, FP32 + [("training.batch_size", 32)], args.budget, "lever: batch size"),
    }
    wanted = [n for n in builders if not args.only or any(s.strip() == n for s in args.only.split(";"))]
    variants = []
    for name in wanted:
        variants.append(builders[name](name))
        print(f"built: {name} (rss {rss_mb():.0f} MB)", flush=True)
    dtypes = {"fp32_gflops": torch.float32} | ({"bf16_gflops": torch.bfloat16} if facts["native_bf16"] or DEVICE.type == "cuda" else {})
    ceilings = {name: 0.0 for name in dtypes}
    for r in range(args.rounds):
        # the ceilings are measured in every round too (best kept), under the same load as the variants
        ceilings = {name: max(ceilings[name], matmul_gflops(dtype)) for name, dtype in dtypes.items()}
        for variant in variants:
            result = measure(variant, args.seconds, warmup_steps=1 if r == 0 else 0)
            variant.rounds.append(result)
            print(f"round {r + 1} {variant.name}: {result['useful_tokens_per_s']:.0f} tok/s, {result['gflops']:.1f} GFLOP/s", flush=True)
    ceiling = ceilings.get("bf16_gflops", ceilings["fp32_gflops"])
    best = {v.name: max(v.rounds, key=lambda x: x["useful_tokens_per_s"]) for v in variants}
    naive = best.get("naive loop, fp32", {}).get("useful_tokens_per_s")
    rows = []
    for v in variants:
        b = best[v.name]
        rows.append({"variant": v.name, "note": v.note, "useful_tokens_per_s": round(b["useful_tokens_per_s"], 1),
                     "x_naive_fp32": round(b["useful_tokens_per_s"] / naive, 3) if naive else None,
                     "gflops": round(b["gflops"], 1), "mfu": round(b["gflops"] / ceiling, 4),
                     "rss_mb": round(b["rss_mb_after"], 0), "rounds_tok_s": [round(x["useful_tokens_per_s"], 1) for x in v.rounds]})
    command = command_line()
    report = {"command": command, "device": str(DEVICE), "machine": facts, "ceilings": {k: round(v, 1) for k, v in ceilings.items()},
              "mfu_against": "bf16" if "bf16_gflops" in ceilings else "fp32", "rounds": args.rounds,
              "seconds_per_measure": args.seconds, "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Training throughput ({facts['cpu']}, {facts['threads']} threads, native bf16: {facts['native_bf16']})", "",
             f"Command: `{command}`", "",
             f"Matmul ceilings of the model's shapes (4096x384 . 384x1536), best of the rounds: fp32 {ceilings['fp32_gflops']:.0f} GFLOP/s"
             + (f", bf16 {ceilings['bf16_gflops']:.0f} GFLOP/s" if "bf16_gflops" in ceilings else ""), "",
             "| variant | useful tokens/s | x naive fp32 | GFLOP/s | MFU | RSS MB | rounds |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['useful_tokens_per_s']:,.0f} | {row['x_naive_fp32']} | {row['gflops']} | {row['mfu']:.3f} | {row['rss_mb']:.0f} | {', '.join(f'{x:,.0f}' for x in row['rounds_tok_s'])} |")
    (args.out / "train_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
