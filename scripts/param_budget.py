"""Trainable-parameter budget of each PEFT method on a UniXcoder-sized RoBERTa, next to the study's figures.

The model is built from a config on the ``meta`` device: no weights are downloaded or allocated,
only parameter shapes exist. Each method is applied to a fresh copy exactly as mtpeft applies it.

    python scripts/param_budget.py > results/param_budget.md
"""

from __future__ import annotations

import warnings

import torch
from transformers import RobertaConfig, RobertaModel
from transformers.utils import logging as hf_logging

from mtpeft.model.methods import build_method

# microsoft/unixcoder-base's shape (its config.json; type_vocab_size 10 there, which adds only 6,912 weights)
UNIXCODER = dict(
    vocab_size=51416, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=1026, type_vocab_size=10, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)
ROWS = [  # label, method, options, the study's figure for UniXcoder
    ("full fine-tuning", "full", {}, "100%"),
    ("serial adapter, Houlsby (bottleneck 64)", "serial_adapter", {"placement": "houlsby"}, "1.85%"),
    ("serial adapter, Pfeiffer (bottleneck 64)", "serial_adapter", {"placement": "pfeiffer"}, "-"),
    ("parallel adapter (bottleneck 64, scale 4)", "parallel_adapter", {}, "0.93%"),
    ("LoRA r 16 on query/value", "lora", {"r": 16}, "0.46%"),
    ("prefix, 20 tokens + projection MLP (default)", "prefix", {}, "~6.4%"),
    ("prefix, 20 tokens, no projection", "prefix", {"prefix_projection": False}, "~6.4%"),
    ("(IA)^3 (keys, values, FFN)", "ia3", {}, "-"),
]


def backbone() -> RobertaModel:
    with torch.device("meta"):
        return RobertaModel(RobertaConfig(**UNIXCODER))  # with the pooler, as AutoModel loads UniXcoder


def count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def main() -> None:
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    print("Produced by (from the repository root, venv active):\n\n    python scripts/param_budget.py > results/param_budget.md\n")
    base_total = count(backbone())[1]
    layers, hidden = UNIXCODER["num_hidden_layers"], UNIXCODER["hidden_size"]
    print(f"UniXcoder-sized RoBERTa (12 layers, hidden 768, 12 heads, FFN 3072, vocab 51416, 1026 positions, pooler): "
          f"{base_total:,} backbone parameters. Task heads are not counted.\n")
    print("| method | trainable params | % of all (backbone + method) | % of backbone | study (UniXcoder) |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for label, name, options, study in ROWS:
        trainable, total = count(build_method(name, options).apply(backbone(), "encoder"))
        results[label] = trainable
        print(f"| {label} | {trainable:,} | {100 * trainable / total:.3f}% | {100 * trainable / base_total:.3f}% | {study} |")

    kv = 2 * layers * hidden  # one prefix token: a key and a value vector in every layer
    target = 0.064 * base_total / (1 - 0.064)
    print(f"""
Notes
- Denominator: the study's figures match "trainable / all parameters of the adapted model (backbone + method)",
  the convention of peft's print_trainable_parameters, truncated to two decimals: Houlsby 1.854% -> 1.85,
  parallel 0.936% -> 0.93, LoRA 0.466% -> 0.46 (rounding would give 0.94 and 0.47). Against the backbone alone
  the figures are slightly higher ("% of backbone"). The pooler (590,592) is part of the backbone here; without
  it Houlsby would be 1.863% -> 1.86, which is consistent with a pooler in the study's count too.
- Counted: bottleneck adapters with biases (down {hidden}x64 + 64, up 64x{hidden} + {hidden} = 99,136 per adapter; Houlsby has
  two per layer, Pfeiffer and parallel one); LoRA A and B matrices (no biases). Task heads are excluded everywhere;
  the study's figures appear to exclude them too (with a 768-wide classification head, ~0.6M more weights,
  every figure would be about 0.46 points higher).
- Prefix: one virtual token is a key and a value in each layer, {kv:,} numbers, so 20 tokens are
  {20 * kv:,} weights ({100 * 20 * kv / (base_total + 20 * kv):.2f}%) - this is also what is saved, since peft stores the
  projected prefix. Training through Li & Liang's projection MLP (20x768 embedding -> 768 -> {kv:,}) trains
  {results[ROWS[5][0]]:,} weights instead. The study's ~6.4% is about {target / 1e6:.1f}M weights, which matches
  neither: it would be a {target / kv:.0f}-token prefix without projection, or a projection MLP about
  {(target - 20 * hidden - kv) / (hidden + 1 + kv):.0f} wide (peft's `encoder_hidden_size`, here the option `projection_hidden`)
  with 20 tokens. Without the study's prefix settings the difference cannot be pinned down.
- (IA)^3 scales keys and values (768 each) and the FFN activations (3072) in every layer: 4,608 per layer.""")


if __name__ == "__main__":
    main()
