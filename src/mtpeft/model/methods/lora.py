"""LoRA (Hu et al. 2021) through peft; the study's setting is r 16 on the attention query/value."""

from __future__ import annotations

from peft import LoraConfig, PeftConfig
from torch import nn

from mtpeft.model.methods.peft_method import PeftLibraryMethod, target_option
from mtpeft.model.methods.registry import register_method

# query/value projections by architecture (peft's defaults agree; spelled out for clarity)
QUERY_VALUE = {"bert": ["query", "value"], "roberta": ["query", "value"], "t5": ["q", "v"], "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"]}


@register_method("lora")
class LoRA(PeftLibraryMethod):
    name = "lora"
    description = "LoRA: low-rank updates of the attention query/value projections (peft)"
    option_names = ("r", "alpha", "dropout", "target")

    def peft_config(self, model: nn.Module, family: str) -> PeftConfig:
        target = target_option(self.options) or QUERY_VALUE.get(model.config.model_type)
        return LoraConfig(
            r=self.number("r", 16, int, low=1),
            lora_alpha=self.number("alpha", 32, int, low=1),
            lora_dropout=self.number("dropout", 0.1, float, low=0.0, high=0.99),
            target_modules=target,
        )
