"""Bottleneck adapters, written for mtpeft (peft has none): serial (Houlsby et al. 2019 / Pfeiffer et
al. 2021) and parallel (He et al. 2022).

A bottleneck is ``up(act(down(h)))``, ``dim -> bottleneck -> dim``, with the up-projection
initialised to zero, so an adapted model computes exactly what the frozen backbone computes until
the adapter has trained.

Design: the backbone's forward code is left alone. Each adapter becomes a child, named
``mtpeft_adapter``, of the backbone module it attaches to (so it moves with ``.to()``, shows up in
``parameters()`` and has a readable name such as
``encoder.layer.3.output.dense.mtpeft_adapter.up.weight``) and is wired in by a forward hook on
that module. Where each adapter goes (``N`` = layer index):

* BERT / RoBERTa (MiniLM, UniXcoder): serial after attention ``layer.N.attention.output.dense``,
  serial after the FFN ``layer.N.output.dense``, parallel ``layer.N.output`` (pre-hook).
* T5 encoder (CodeT5+): ``block.N.layer.0.SelfAttention.o``, ``block.N.layer.1.DenseReluDense``;
  parallel ``block.N.layer.1.DenseReluDense``.
* Llama / Qwen2 / Mistral (SmolLM2): ``layers.N.self_attn.o_proj``, ``layers.N.mlp``; parallel
  ``layers.N.mlp``.

Serial: ``h -> h + up(act(down(h)))`` on the output of the sub-layer's last projection, i.e. after
projecting back to the model width and *before* the skip connection is added, where Houlsby et al.
put it. In BERT/RoBERTa (post-LN) that is inside ``BertSelfOutput`` / ``BertOutput``, before
``LayerNorm(dropout(h) + residual)``; in T5 and Llama (pre-LN) the sub-layer output then goes
through the model's dropout (T5) and the residual add. ``placement: pfeiffer`` keeps only the
adapter after the feed-forward block (Pfeiffer et al.'s position, without their extra LayerNorm
variants).

Parallel (He et al. 2022): ``FFN(x) + scale * up(act(down(x)))`` where ``x`` is the FFN's input.
T5 and Llama: a hook on the FFN module (``DenseReluDense`` / ``mlp``; its input ``x`` is already
normalised by the block's pre-LayerNorm) adds the term to the FFN's output, before T5's residual
dropout. BERT/RoBERTa split the FFN over two modules (``intermediate``, and ``output`` which also
holds the residual add and the LayerNorm), so a pre-hook on ``layer.N.output`` adds the term to
its residual input ``x``: the block computes ``LayerNorm(dropout(FFN(x)) + x + scale * adapter(x))``
(the adapter term is added after the FFN's dropout, as in He et al.'s code).

Saved as ``adapter_config.json`` (method, options, architecture, sites) and
``adapter_model.safetensors`` (adapter weights only, named by the module they attach to).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mtpeft.errors import MtpeftError
from mtpeft.model.methods.base import Method, freeze
from mtpeft.model.methods.registry import register_method

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CHILD = "mtpeft_adapter"  # the attribute name of an adapter inside the module it attaches to
RECORD = "mtpeft_adapter_config"  # on the backbone: the method and options its adapters were built with

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh}
PLACEMENTS = ("houlsby", "pfeiffer")


@dataclass(frozen=True)
class Layout:
    """Module-name patterns (``re.fullmatch`` on ``named_modules`` names) for one architecture family."""

    label: str
    attention_output: str  # serial (Houlsby): the attention sub-layer's output projection
    ffn_output: str  # serial: the module whose output is the feed-forward sub-layer's output
    parallel: str  # parallel: the module the parallel adapter hooks
    parallel_on_residual: bool  # True: add to the residual input of ``parallel`` (BERT); False: to its output


_PREFIX = r"(?:.*\.)?"
BERT = Layout(
    "BERT/RoBERTa encoders (BERT, RoBERTa, MiniLM, UniXcoder)",
    attention_output=_PREFIX + r"layer\.\d+\.attention\.output\.dense",
    ffn_output=_PREFIX + r"layer\.\d+\.output\.dense",
    parallel=_PREFIX + r"layer\.\d+\.output",
    parallel_on_residual=True,
)
T5 = Layout(
    "T5 encoders (CodeT5+)",
    attention_output=_PREFIX + r"block\.\d+\.layer\.0\.SelfAttention\.o",
    ffn_output=_PREFIX + r"block\.\d+\.layer\.\d+\.DenseReluDense",
    parallel=_PREFIX + r"block\.\d+\.layer\.\d+\.DenseReluDense",
    parallel_on_residual=False,
)
LLAMA = Layout(
    "Llama-style decoders (Llama, Qwen2, Qwen3, Mistral, SmolLM2)",
    attention_output=_PREFIX + r"layers\.\d+\.self_attn\.o_proj",
    ffn_output=_PREFIX + r"layers\.\d+\.mlp",
    parallel=_PREFIX + r"layers\.\d+\.mlp",
    parallel_on_residual=False,
)
LAYOUTS: dict[str, Layout] = {
    "bert": BERT,
    "roberta": BERT,
    "xlm-roberta": BERT,
    "t5": T5,
    "llama": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "mistral": LLAMA,
}


def supported_architectures() -> str:
    labels = dict.fromkeys(layout.label for layout in LAYOUTS.values())
    return "; ".join(labels) + f" (model types: {', '.join(LAYOUTS)})"


def layout_of(model: nn.Module) -> Layout:
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    try:
        return LAYOUTS[model_type]
    except KeyError:
        raise MtpeftError(
            f"bottleneck adapters do not support the {model_type!r} architecture; supported: {supported_architectures()}"
        ) from None


def hidden_size(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "hidden_size", None) or config.d_model)


class Bottleneck(nn.Module):
    """``scale * up(act(down(h)))``: the change an adapter makes (the caller adds the residual)."""

    def __init__(self, dim: int, bottleneck: int, activation: str, scale: float = 1.0, *,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)  # PyTorch's default init
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)  # zero up-projection: the adapter starts as the identity
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(hidden)))

    def attach(self, module: nn.Module) -> None:
        """Register the hook that wires this adapter into ``module`` (its parent)."""
        raise NotImplementedError


def _replace_first(output: Any, change: Any) -> Any:
    """Apply ``change`` to a module's output tensor (or the first element of a tuple output)."""
    if isinstance(output, torch.Tensor):
        return change(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (change(output[0]),) + output[1:]
    raise MtpeftError(f"cannot attach an adapter to a module returning {type(output).__name__}")


class SerialAdapter(Bottleneck):
    """Forward hook: the hooked module's output ``h`` becomes ``h + adapter(h)``."""

    def hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return _replace_first(output, lambda h: h + self(h))

    def attach(self, module: nn.Module) -> None:
        module.register_forward_hook(self.hook)


class ParallelAdapter(Bottleneck):
    """Forward hook: the hooked FFN's output becomes ``FFN(x) + scale * adapter(x)``."""

    def hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        x = args[0] if args else next(iter(kwargs.values()))
        return _replace_first(output, lambda h: h + self(x))

    def attach(self, module: nn.Module) -> None:
        module.register_forward_hook(self.hook, with_kwargs=True)


class ResidualParallelAdapter(Bottleneck):
    """Forward pre-hook on BERT's ``BertOutput(h, input_tensor)``: ``input_tensor`` (the FFN input
    ``x``, which BertOutput adds back before its LayerNorm) becomes ``x + scale * adapter(x)``."""

    def hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if len(args) >= 2:
            x = args[1]
            return (args[0], x + self(x), *args[2:]), kwargs
        if "input_tensor" in kwargs:
            x = kwargs["input_tensor"]
            return args, {**kwargs, "input_tensor": x + self(x)}
        raise MtpeftError("parallel adapter: the feed-forward output module was called without its residual input")

    def attach(self, module: nn.Module) -> None:
        module.register_forward_pre_hook(self.hook, with_kwargs=True)


def adapter_sites(model: nn.Module) -> list[str]:
    """Names of the modules that carry an mtpeft adapter, in module order."""
    return [name for name, module in model.named_modules() if isinstance(getattr(module, CHILD, None), Bottleneck)]


class BottleneckAdapter(Method):
    """Shared machinery; subclasses say where adapters go and which adapter class they use."""

    defaults: ClassVar[dict[str, Any]] = {}
    option_names = None  # checked against ``defaults`` below

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - set(self.defaults))
        if unknown:
            raise MtpeftError(
                f"method {self.name!r}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(self.defaults)}"
            )
        self.settings = {**self.defaults, **self.options}
        try:
            self.settings["bottleneck"] = int(self.settings["bottleneck"])
        except (TypeError, ValueError):
            raise MtpeftError(f"method {self.name!r}: option 'bottleneck' must be an integer") from None
        if self.settings["bottleneck"] < 1:
            raise MtpeftError(f"method {self.name!r}: option 'bottleneck' must be at least 1")
        activation = str(self.settings["activation"]).lower()
        if activation not in ACTIVATIONS:
            raise MtpeftError(
                f"method {self.name!r}: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        self.settings["activation"] = activation

    def sites(self, layout: Layout) -> list[tuple[str, type[Bottleneck], float]]:
        """(module-name pattern, adapter class, scale) for every kind of site this method uses."""
        raise NotImplementedError

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        self.check_supported(model, family)
        layout = layout_of(model)
        if adapter_sites(model):
            raise MtpeftError("this backbone already carries bottleneck adapters; load a fresh backbone")

        config = model.config
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
        modules = list(model.named_modules())
        planned: list[tuple[str, nn.Module, type[Bottleneck], float]] = []
        for pattern, kind, scale in self.sites(layout):
            matched = [(name, module) for name, module in modules if re.fullmatch(pattern, name)]
            if not matched or (layers and len(matched) != layers):
                raise MtpeftError(
                    f"method {self.name!r}: expected {layers or 'one or more'} modules matching {pattern!r} in the "
                    f"{config.model_type!r} backbone, found {len(matched)}; supported: {supported_architectures()}"
                )
            planned.extend((name, module, kind, scale) for name, module in matched)

        freeze(model)
        setattr(model, RECORD, {"method": self.name, "options": dict(self.settings)})
        dim = hidden_size(model)
        for _name, module, kind, scale in planned:
            reference = next(module.parameters(), None)
            if reference is None:
                reference = next(model.parameters())
            adapter = kind(dim, self.settings["bottleneck"], self.settings["activation"], scale,
                           device=reference.device, dtype=reference.dtype)
            module.add_module(CHILD, adapter)  # requires_grad stays True: only adapters train
            adapter.attach(module)
        return model

    def state_dict_of(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {
            f"{site}.{CHILD}.{key}": tensor
            for site in adapter_sites(model)
            for key, tensor in model.get_submodule(site).get_submodule(CHILD).state_dict().items()
        }

    def save(self, model: nn.Module, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        record = getattr(model, RECORD, None)
        weights = {key: t.detach().to("cpu").contiguous() for key, t in self.state_dict_of(model).items()}
        if not weights or record is None:
            raise MtpeftError(f"method {self.name!r}: the model carries no adapters to save")
        if record["method"] != self.name:
            raise MtpeftError(f"method {self.name!r}: the model carries {record['method']!r} adapters")
        save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "method": self.name})
        config = {
            "method": self.name,
            "options": record["options"],  # what the adapters were built with, not this instance's options
            "model_type": model.config.model_type,
            "sites": adapter_sites(model),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def load(self, model: nn.Module, family: str, directory: Path) -> nn.Module:
        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
            weights = load_file(str(directory / WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as exc:
            raise MtpeftError(f"cannot read the {self.name} adapter in {directory}: {exc}") from None
        if config.get("method") != self.name:
            raise MtpeftError(f"{directory} holds a {config.get('method')!r} adapter, not {self.name!r}")
        method = type(self)(config.get("options") or {})  # the saved options define the adapter's shape
        model = method.apply(model, family)
        expected = method.state_dict_of(model)
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise MtpeftError(
                f"the {self.name} adapter in {directory} does not fit this {model.config.model_type!r} backbone: "
                f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}"
            )
        for site in adapter_sites(model):
            adapter = model.get_submodule(site).get_submodule(CHILD)
            prefix = f"{site}.{CHILD}."
            part = {key[len(prefix):]: t for key, t in weights.items() if key.startswith(prefix)}
            try:
                adapter.load_state_dict(part, strict=True)
            except RuntimeError as exc:
                raise MtpeftError(f"the {self.name} adapter in {directory} does not fit this backbone: {exc}") from None
        self.settings = method.settings
        return model


@register_method("serial_adapter")
class SerialBottleneckAdapter(BottleneckAdapter):
    name = "serial_adapter"
    description = "serial bottleneck adapters after attention and feed-forward (Houlsby) or feed-forward only (Pfeiffer)"
    defaults = {"bottleneck": 64, "activation": "relu", "placement": "houlsby"}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        placement = str(self.settings["placement"]).lower()
        if placement not in PLACEMENTS:
            raise MtpeftError(f"method 'serial_adapter': unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
        self.settings["placement"] = placement

    def sites(self, layout: Layout) -> list[tuple[str, type[Bottleneck], float]]:
        after_ffn = [(layout.ffn_output, SerialAdapter, 1.0)]
        if self.settings["placement"] == "pfeiffer":
            return after_ffn
        return [(layout.attention_output, SerialAdapter, 1.0)] + after_ffn


@register_method("parallel_adapter")
class ParallelBottleneckAdapter(BottleneckAdapter):
    name = "parallel_adapter"
    description = "parallel bottleneck adapter beside the feed-forward block, scaled (He et al. 2022)"
    defaults = {"bottleneck": 64, "activation": "relu", "scale": 4.0}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        try:
            self.settings["scale"] = float(self.settings["scale"])
        except (TypeError, ValueError):
            raise MtpeftError("method 'parallel_adapter': option 'scale' must be a number") from None

    def sites(self, layout: Layout) -> list[tuple[str, type[Bottleneck], float]]:
        kind = ResidualParallelAdapter if layout.parallel_on_residual else ParallelAdapter
        return [(layout.parallel, kind, self.settings["scale"])]
