"""(IA)^3 (Liu et al. 2022) through peft: learned vectors that rescale the attention keys and values
and the feed-forward block's inner activations (the input of its down-projection).

Options: ``target`` and ``feedforward`` (module names; ``feedforward`` must be among ``target``).
Defaults follow the paper. peft's own defaults are used where they already do (T5, Llama,
Mistral); for BERT/RoBERTa peft's suffix ``output.dense`` also matches the attention output
projection, and for Qwen2 peft scales the queries instead of the keys, so both are spelled out.
"""

from __future__ import annotations

from typing import Any

from peft import IA3Config, PeftConfig
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.model.methods.peft_method import PeftLibraryMethod, target_option
from mtpeft.model.methods.registry import register_method

# regular expressions (peft matches a string with re.fullmatch against the module name)
_BERT_FFN = r"(?:.*\.)?layer\.\d+\.output\.dense"  # not layer.N.attention.output.dense
_BERT = (r"(?:.*\.)?layer\.\d+\.(?:attention\.self\.(?:key|value)|output\.dense)", _BERT_FFN)
_DECODER = (["k_proj", "v_proj", "down_proj"], ["down_proj"])
# model type -> (target modules, feed-forward modules); absent: peft's default for the model type
DEFAULTS: dict[str, tuple[Any, Any]] = {"bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "qwen2": _DECODER, "qwen3": _DECODER}


@register_method("ia3")
class IA3(PeftLibraryMethod):
    name = "ia3"
    description = "(IA)^3: learned rescaling of keys, values and feed-forward activations (peft)"
    option_names = ("target", "feedforward")

    def peft_config(self, model: nn.Module, family: str) -> PeftConfig:
        target = target_option(self.options)
        feedforward = target_option({"target": self.options.get("feedforward")})
        if target is None:
            if feedforward is not None:
                raise MtpeftError("method 'ia3': option 'feedforward' needs option 'target' too")
            target, feedforward = DEFAULTS.get(model.config.model_type, (None, None))  # None: peft's default
        elif feedforward is None:
            feedforward = []  # user-chosen targets: no feed-forward (input-side) scaling unless asked
        return IA3Config(target_modules=target, feedforward_modules=feedforward, init_ia3_weights=True)
