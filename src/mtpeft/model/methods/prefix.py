"""Prefix tuning (Li & Liang 2021) through peft: trained key/value vectors prepended in every layer.

Options: ``num_virtual_tokens`` (default 20), ``prefix_projection`` (default true) and
``projection_hidden`` (the projection MLP's width; default: peft's, the key/value width).

* 20 virtual tokens: peft's examples use 20-30, Li & Liang found short prefixes (10) enough for
  table-to-text and only needed 200 for summarisation; the tasks here are classification and
  retrieval. On BERT/RoBERTa the prefix also shifts the absolute positions of the real tokens by
  ``num_virtual_tokens`` (transformers counts the prefix as past tokens), so inputs may be at most
  ``max_position_embeddings - num_virtual_tokens`` long (UniXcoder: 1024 - 20 positions): a short
  prefix keeps that cost small.
* The projection: Li & Liang reparametrise the prefix through an MLP because optimising it directly
  is unstable; the study's ~6.4 % trainable parameters for UniXcoder also implies such an MLP (a
  bare 20-token prefix is 0.3 %). The MLP is training-only: peft saves the projected prefix.

The model is wrapped with ``task_type="FEATURE_EXTRACTION"`` (peft's base-model wrapper, which
passes the prefix as ``past_key_values`` and extends the attention mask). With peft 0.21.2 and
transformers 5.23 this works on BERT/RoBERTa and Llama/Qwen2-style models; T5 encoders fail
(their relative position bias is built for the input only and does not match the longer keys),
so they are refused. Any other architecture is probed with a tiny padded forward when the method
is applied or loaded; a failure, or a prefix that does not change the output, is an MtpeftError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftConfig, PrefixTuningConfig
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.model.methods.peft_method import PeftLibraryMethod
from mtpeft.model.methods.registry import register_method

# model types whose attention cannot take a prefix (checked with peft 0.21.2 + transformers 5.23)
_T5 = (
    "T5 encoders (CodeT5+) add a relative position bias sized for the input tokens only, which does not fit the "
    "prefix keys (transformers fails with a size mismatch once the input is padded)"
)
UNSUPPORTED = {"t5": _T5, "mt5": _T5, "umt5": _T5, "longt5": _T5}


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise MtpeftError(f"method 'prefix': option {name!r} must be true or false, got {value!r}")


@register_method("prefix")
class PrefixTuning(PeftLibraryMethod):
    name = "prefix"
    description = "prefix tuning: trained key/value prefixes in every attention layer (peft)"
    option_names = ("num_virtual_tokens", "prefix_projection", "projection_hidden")

    def check_supported(self, model: nn.Module, family: str) -> None:
        super().check_supported(model, family)
        model_type = model.config.model_type
        if model_type in UNSUPPORTED:
            raise MtpeftError(f"method 'prefix' is not supported on {model_type!r} backbones: {UNSUPPORTED[model_type]}")

    def peft_config(self, model: nn.Module, family: str) -> PeftConfig:
        try:
            tokens = int(self.options.get("num_virtual_tokens", 20))
            hidden = self.options.get("projection_hidden")
            hidden = None if hidden is None else int(hidden)
        except (TypeError, ValueError):
            raise MtpeftError("method 'prefix': num_virtual_tokens and projection_hidden must be integers") from None
        if tokens < 1:
            raise MtpeftError("method 'prefix': num_virtual_tokens must be at least 1")
        return PrefixTuningConfig(
            task_type="FEATURE_EXTRACTION",
            num_virtual_tokens=tokens,
            prefix_projection=_flag(self.options.get("prefix_projection", True), "prefix_projection"),
            encoder_hidden_size=hidden,
        )

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        return probe(super().apply(model, family))

    def load(self, model: nn.Module, family: str, directory: Path) -> nn.Module:
        return probe(super().load(model, family, directory))


def probe(peft_model: nn.Module) -> nn.Module:
    """Run a 3-token padded input through the prefixed model; refuse a backbone that fails or ignores it."""
    base = peft_model.get_base_model()
    reference = next(base.parameters())
    if reference.device.type == "meta":  # parameter counting only
        return peft_model
    model_type = base.config.model_type
    ids = torch.zeros((1, 3), dtype=torch.long, device=reference.device)
    mask = torch.tensor([[1, 1, 0]], device=reference.device)
    training = peft_model.training
    peft_model.eval()
    try:
        with torch.no_grad():
            prefixed = peft_model(input_ids=ids, attention_mask=mask).last_hidden_state
            plain = base(input_ids=ids, attention_mask=mask).last_hidden_state
    except Exception as exc:  # noqa: BLE001 - any failure here means the backbone cannot take a prefix
        raise MtpeftError(
            f"method 'prefix' is not supported on {model_type!r} backbones: the model cannot take prefix "
            f"key/values ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        peft_model.train(training)
    if prefixed.shape != plain.shape:
        raise MtpeftError(
            f"method 'prefix' is not supported on {model_type!r} backbones: hidden states of shape "
            f"{tuple(prefixed.shape)} instead of {tuple(plain.shape)}"
        )
    if torch.allclose(prefixed[:, :2], plain[:, :2]):
        raise MtpeftError(f"method 'prefix' is not supported on {model_type!r} backbones: the model ignores the prefix")
    return peft_model
