"""Every registered PEFT method on tiny BERT, Llama and T5-encoder backbones: what trains, identity at
initialisation, save -> load round trips, adapter placement, and refusals of unsupported set-ups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, GPT2Config, GPT2Model, T5Config, T5Model

from mtpeft.errors import MtpeftError
from mtpeft.model.backbone import Backbone, load_backbone
from mtpeft.model.methods import METHODS, build_method
from mtpeft.model.methods.bottleneck import CHILD, adapter_sites
from mtpeft.model.methods.prefix import probe
from mtpeft.model.tiny import build_tiny_backbone

# peft's prefix path calls a transformers property that transformers 5 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

ARCHS = ("bert", "llama", "t5")
CASES = {  # id -> (method, options)
    "full": ("full", {}),
    "lora": ("lora", {}),
    "serial_houlsby": ("serial_adapter", {"placement": "houlsby", "bottleneck": 8}),
    "serial_pfeiffer": ("serial_adapter", {"placement": "pfeiffer", "bottleneck": 8}),
    "parallel": ("parallel_adapter", {"bottleneck": 8}),
    "prefix": ("prefix", {"num_virtual_tokens": 4}),
    "prefix_plain": ("prefix", {"num_virtual_tokens": 4, "prefix_projection": False}),
    "ia3": ("ia3", {}),
}
# what a method's own parameters are called (full: everything)
MARKER = {"lora": "lora_", "serial_adapter": CHILD, "parallel_adapter": CHILD, "prefix": "prompt_encoder", "ia3": "ia3_l"}
UNSUPPORTED = {("prefix", "t5")}  # combinations that must be refused
IDENTITY_AT_INIT = {"lora", "serial_adapter", "parallel_adapter", "ia3"}
TEXTS = ["int main() { char buf[16]; strcpy(buf, argv[1]); return 0; }", "def f(x):\n    return x"]


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backbones")
    dirs = {arch: build_tiny_backbone(root / arch, arch, hidden=32) for arch in ("bert", "llama")}
    # a tiny encoder-decoder T5 saved like CodeT5+; load_backbone keeps its encoder (a T5Stack)
    tokenizer = AutoTokenizer.from_pretrained(dirs["bert"])
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                      decoder_start_token_id=0, pad_token_id=tokenizer.pad_token_id)
    T5Model(config).save_pretrained(root / "t5")
    tokenizer.save_pretrained(root / "t5")
    dirs["t5"] = root / "t5"
    return dirs


def fresh(backbone_dirs: dict[str, Path], arch: str) -> Backbone:
    backbone = load_backbone(str(backbone_dirs[arch]))
    assert backbone.model.config.model_type == arch
    return backbone


def batch(backbone: Backbone) -> dict[str, torch.Tensor]:
    enc = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert enc["attention_mask"].min() == 0  # the batch is padded: masks are exercised
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def states(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(**inputs).last_hidden_state


def pooled_loss(backbone: Backbone, module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    wrapped = Backbone(module, backbone.tokenizer, backbone.family)
    pooled = wrapped(inputs["input_ids"], inputs["attention_mask"])
    weights = torch.randn(pooled.shape[-1], generator=torch.Generator().manual_seed(1))
    return (pooled @ weights).pow(2).sum()  # not a plain sum: LayerNorm outputs sum to a constant


def supported_cases() -> list:
    return [  # the unsupported ones are checked in test_unsupported_method_backbone_fails_clearly
        pytest.param(arch, case, id=f"{case}-{arch}")
        for arch in ARCHS
        for case, (method, _options) in CASES.items()
        if (method, arch) not in UNSUPPORTED
    ]


def test_every_registered_method_is_covered():
    assert {method for method, _ in CASES.values()} == set(METHODS.names())


@pytest.mark.parametrize("arch,case", supported_cases())
def test_only_method_parameters_train(backbone_dirs, arch, case):
    method_name, options = CASES[case]
    backbone = fresh(backbone_dirs, arch)
    inputs = batch(backbone)
    module = build_method(method_name, options).apply(backbone.model, backbone.family)
    module.train()
    pooled_loss(backbone, module, inputs).backward()
    params = dict(module.named_parameters())
    if method_name == "full":
        assert all(p.requires_grad for p in params.values())
        unused = {n for n in params if n.startswith("pooler.")}  # BERT's pooler: not on the mean-pooled path
        assert all(params[n].grad is not None for n in params if n not in unused)
        return
    own = {n for n in params if MARKER[method_name] in n}
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert own and trainable == own
    assert all(params[n].grad is None for n in params if n not in own), "a frozen backbone weight got a gradient"
    assert all(params[n].grad is not None for n in own)
    assert any(params[n].grad.abs().sum() > 0 for n in own)
    total = sum(p.numel() for p in params.values())
    assert sum(params[n].numel() for n in own) < 0.5 * total


@pytest.mark.parametrize("arch,case", supported_cases())
def test_identity_at_init_and_save_load_round_trip(backbone_dirs, arch, case, tmp_path):
    method_name, options = CASES[case]
    backbone = fresh(backbone_dirs, arch)
    inputs = batch(backbone)
    frozen = states(backbone.model, inputs)
    module = build_method(method_name, options).apply(backbone.model, backbone.family)
    assert states(module, inputs).shape == frozen.shape  # one state per input token, prefix or not
    if method_name in IDENTITY_AT_INIT:
        assert torch.allclose(states(module, inputs), frozen, atol=1e-6, rtol=0)

    torch.manual_seed(2)  # "train": move every trainable weight so the round trip is not trivial
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    trained = states(module, inputs)
    assert (trained - frozen).abs().max() > 1e-3

    build_method(method_name, options).save(module, tmp_path)
    again = fresh(backbone_dirs, arch)
    loaded = build_method(method_name, options).load(again.model, again.family, tmp_path)
    assert torch.allclose(states(loaded, inputs), trained, atol=1e-5, rtol=0)
    if method_name in MARKER:  # only the method's weights are written, not the backbone
        saved = sum(t.numel() for f in tmp_path.glob("*.safetensors") for t in load_file(f).values())
        assert saved < 0.5 * sum(p.numel() for p in again.model.parameters())


def test_unsupported_method_backbone_fails_clearly(backbone_dirs):
    backbone = fresh(backbone_dirs, "t5")
    with pytest.raises(MtpeftError, match="'prefix' is not supported on 't5'"):
        build_method("prefix").apply(backbone.model, backbone.family)
    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=64))
    for name in ("serial_adapter", "parallel_adapter"):
        with pytest.raises(MtpeftError, match="do not support the 'gpt2' architecture; supported: BERT.*T5.*Llama"):
            build_method(name).apply(gpt2, "decoder")


def test_prefix_probe_refuses_a_backbone_that_cannot_take_a_prefix(backbone_dirs):
    # without the model-type list, the probe alone catches T5 (its attention fails on a padded input)
    encoder = fresh(backbone_dirs, "t5").model
    wrapped = get_peft_model(encoder, PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4))
    with pytest.raises(MtpeftError, match="cannot take prefix key/values"):
        probe(wrapped)


def test_prefix_respects_the_attention_mask(backbone_dirs):
    for arch in ("bert", "llama"):
        backbone = fresh(backbone_dirs, arch)
        inputs = batch(backbone)
        module = build_method("prefix", {"num_virtual_tokens": 4}).apply(backbone.model, backbone.family)
        out = states(module, inputs)
        assert out.shape[:2] == inputs["input_ids"].shape
        short = int(inputs["attention_mask"][1].sum())
        changed = dict(inputs, input_ids=inputs["input_ids"].clone())
        changed["input_ids"][1, short:] = 1  # different tokens under the padding
        assert torch.allclose(states(module, changed)[1, :short], out[1, :short], atol=1e-6)


EXPECTED_SITES = {
    ("bert", "houlsby"): ["encoder.layer.{i}.attention.output.dense", "encoder.layer.{i}.output.dense"],
    ("bert", "pfeiffer"): ["encoder.layer.{i}.output.dense"],
    ("bert", "parallel"): ["encoder.layer.{i}.output"],
    ("llama", "houlsby"): ["layers.{i}.self_attn.o_proj", "layers.{i}.mlp"],
    ("llama", "pfeiffer"): ["layers.{i}.mlp"],
    ("llama", "parallel"): ["layers.{i}.mlp"],
    ("t5", "houlsby"): ["block.{i}.layer.0.SelfAttention.o", "block.{i}.layer.1.DenseReluDense"],
    ("t5", "pfeiffer"): ["block.{i}.layer.1.DenseReluDense"],
    ("t5", "parallel"): ["block.{i}.layer.1.DenseReluDense"],
}


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if CHILD in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    return module.eval()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer", "parallel"])
def test_adapter_placement(backbone_dirs, arch, placement):
    backbone = fresh(backbone_dirs, arch)
    name, options = ("parallel_adapter", {"scale": 4.0}) if placement == "parallel" else ("serial_adapter", {"placement": placement})
    model = perturbed(build_method(name, options).apply(backbone.model, backbone.family))
    expected = [site.format(i=i) for i in range(2) for site in EXPECTED_SITES[arch, placement]]
    assert adapter_sites(model) == expected
    assert all(model.get_submodule(site).get_submodule(CHILD).down.out_features == 64 for site in expected)

    site = model.get_submodule(expected[-1])
    adapter = site.get_submodule(CHILD)
    x = torch.randn(2, 5, getattr(site, "in_features", 32))  # hidden size 32; BERT's output.dense takes 64
    with torch.no_grad():
        if placement != "parallel":  # serial: h -> h + adapter(h) on the sub-layer's projected output
            plain = site.forward(x)  # .forward bypasses the hooks
            assert torch.allclose(site(x), plain + adapter.up(adapter.act(adapter.down(plain))), atol=1e-6)
        elif arch == "bert":  # BertOutput(h, x): LayerNorm(dropout(dense(h)) + x + 4 * adapter(x))
            h = torch.randn(2, 5, site.dense.in_features)
            manual = site.LayerNorm(site.dense(h) + x + 4.0 * adapter.up(adapter.act(adapter.down(x))))
            assert torch.allclose(site(h, x), manual, atol=1e-5)
        else:  # FFN(x) + 4 * adapter(x), x = the FFN's input
            assert torch.allclose(site(x), site.forward(x) + 4.0 * adapter.up(adapter.act(adapter.down(x))), atol=1e-5)


def test_serial_adapter_sits_before_bert_residual_layernorm(backbone_dirs):
    model = perturbed(build_method("serial_adapter").apply(fresh(backbone_dirs, "bert").model, "encoder"))
    block = model.get_submodule("encoder.layer.0.attention.output")  # BertSelfOutput
    adapter = block.dense.get_submodule(CHILD)
    h, residual = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    with torch.no_grad():
        projected = torch.nn.functional.linear(h, block.dense.weight, block.dense.bias)
        manual = block.LayerNorm(projected + adapter.up(adapter.act(adapter.down(projected))) + residual)
        assert torch.allclose(block(h, residual), manual, atol=1e-5)


def test_adapter_options_and_strict_loading(backbone_dirs, tmp_path):
    with pytest.raises(MtpeftError, match="placement"):
        build_method("serial_adapter", {"placement": "middle"})
    with pytest.raises(MtpeftError, match="activation"):
        build_method("parallel_adapter", {"activation": "softplus2"})
    with pytest.raises(MtpeftError, match="unknown option"):
        build_method("serial_adapter", {"rank": 4})

    backbone = fresh(backbone_dirs, "bert")
    model = build_method("serial_adapter", {"bottleneck": 4, "activation": "gelu"}).apply(backbone.model, "encoder")
    assert model.get_submodule("encoder.layer.0.output.dense").get_submodule(CHILD).down.out_features == 4
    with pytest.raises(MtpeftError, match="already carries"):
        build_method("serial_adapter").apply(model, "encoder")
    build_method("serial_adapter").save(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["method"] == "serial_adapter"
    assert config["options"] == {"bottleneck": 4, "activation": "gelu", "placement": "houlsby"}
    weights = load_file(tmp_path / "adapter_model.safetensors")
    assert set(weights) == {f"{s}.{CHILD}.{p}.{w}" for s in adapter_sites(model) for p in ("down", "up") for w in ("weight", "bias")}

    # the saved options win over the loader's: a default-options method loads the bottleneck-4 adapter
    loaded = build_method("serial_adapter").load(fresh(backbone_dirs, "bert").model, "encoder", tmp_path)
    assert loaded.get_submodule("encoder.layer.0.output.dense").get_submodule(CHILD).down.out_features == 4
    # a BERT adapter does not fit a Llama backbone
    with pytest.raises(MtpeftError, match="does not fit"):
        build_method("serial_adapter").load(fresh(backbone_dirs, "llama").model, "decoder", tmp_path)
    # wrong method, missing and unexpected keys are errors
    with pytest.raises(MtpeftError, match="not 'parallel_adapter'"):
        build_method("parallel_adapter").load(fresh(backbone_dirs, "bert").model, "encoder", tmp_path)
    key = sorted(weights)[0]
    for broken in ({k: v for k, v in weights.items() if k != key}, {**weights, "extra.weight": torch.zeros(1)}):
        save_file(broken, tmp_path / "adapter_model.safetensors")
        with pytest.raises(MtpeftError, match="does not fit"):
            build_method("serial_adapter").load(fresh(backbone_dirs, "bert").model, "encoder", tmp_path)
