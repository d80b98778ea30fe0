"""Token windows and truncation, separately encoded clone pairs, the search head's start, dropout."""

import pytest
import torch

from mtpeft.config import resolve_config
from mtpeft.errors import MtpeftError
from mtpeft.model.backbone import load_backbone, load_pretrained
from mtpeft.model.build import build_model
from mtpeft.model.tiny import tiny_backbone_dir
from mtpeft.tasks import EvalContext, build_task
from mtpeft.tasks.binary import Example
from mtpeft.tasks.clone import PairHead, distinct_texts
from mtpeft.tasks.encoding import Encoding, combine_windows, encode_texts, special_wrap
from mtpeft.training.loop import seed_everything
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def tokenizer():
    return load_backbone(str(tiny_backbone_dir("bert"))).tokenizer


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_windows_cover_a_long_text_and_mark_their_owner(tokenizer):
    prefix, suffix = special_wrap(tokenizer)
    assert prefix and suffix  # [CLS] ... [SEP]
    room = 16 - len(prefix) - len(suffix)
    plain = tokenizer([words(40)], add_special_tokens=False)["input_ids"][0]
    batch = encode_texts([words(40), "short"], tokenizer, Encoding(16, windows=10))
    rows = batch["input_ids"].shape[0]
    assert rows == -(-len(plain) // room) + 1
    assert batch["owner"].tolist() == [0] * (rows - 1) + [1]
    # every token of the long text appears once, in order, across its windows
    got = [t for r, m in zip(batch["input_ids"][:-1], batch["attention_mask"][:-1]) for t in r[m.bool()].tolist()[len(prefix):-len(suffix)]]
    assert got == plain


def test_window_cap_and_head_tail_truncation(tokenizer):
    assert encode_texts([words(80)], tokenizer, Encoding(16, windows=2))["input_ids"].shape[0] == 2
    plain = tokenizer([words(40)], add_special_tokens=False)["input_ids"][0]
    row = encode_texts([words(40)], tokenizer, Encoding(16, truncation="head_tail"))["input_ids"][0].tolist()
    body = row[1:-1]
    assert body[: len(body) // 2] == plain[: len(body) // 2] and body[len(body) // 2 :] == plain[-(len(body) - len(body) // 2) :]


def test_pad_multiple_and_bad_options(tokenizer):
    assert encode_texts(["a b c"], tokenizer, Encoding(64, pad_multiple=32))["input_ids"].shape[1] == 32
    with pytest.raises(MtpeftError, match="unknown truncation"):
        Encoding(16, truncation="middle")
    with pytest.raises(MtpeftError, match="windows must be a positive integer"):
        Encoding(16, windows=0)


def test_combine_windows_mean_and_max():
    pooled = torch.tensor([[1.0, 4.0], [3.0, 0.0], [5.0, 5.0]])
    owner = torch.tensor([0, 0, 1])
    assert combine_windows(pooled, owner, "mean").tolist() == [[2.0, 2.0], [5.0, 5.0]]
    assert combine_windows(pooled, owner, "max").tolist() == [[3.0, 4.0], [5.0, 5.0]]


def test_pair_head_is_symmetric_and_distinct_texts_are_encoded_once():
    head = PairHead(8).eval()  # (dropout draws differ between the two orders in train mode)
    u, v = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.allclose(head(u, v), head(v, u))
    pairs = [Example("1\t2", "a", 1, "b"), Example("2\t3", "b", 0, "c"), Example("1\t3", "a", 1, "c")]
    texts, left, right = distinct_texts(pairs)
    assert texts == ["a", "b", "c"] and left == [0, 1, 0] and right == [1, 2, 2]


def test_separate_and_joint_clone_batches(tokenizer):
    pairs = [Example("1\t2", "void a() {}", 1, "void b() {}"), Example("2\t1", "void b() {}", 0, "void a() {}")]
    separate = build_task("clone").collate(pairs, tokenizer, 32)
    assert separate["inputs"]["input_ids"].shape[0] == 2  # two distinct methods, not four
    assert separate["left"].tolist() == [0, 1] and separate["right"].tolist() == [1, 0]
    joint = build_task("clone", {"pair_encoding": "joint"}).collate(pairs, tokenizer, 32)
    assert joint["inputs"]["input_ids"].shape[0] == 2 and "left" not in joint
    with pytest.raises(MtpeftError, match="pair_encoding"):
        build_task("clone", {"pair_encoding": "cross"}).make_head(8)


def test_clone_probabilities_match_batched_logits(task_files, tmp_path):
    config = resolve_config(tiny_config(task_files, tmp_path / "run"))
    seed_everything(0)
    tasks = {"clone": build_task("clone", config.tasks["clone"].options)}
    model, _ = build_model(config, tasks)
    model.eval()
    examples = tasks["clone"].read_train(task_files["clone"]["train"], __import__("mtpeft.data", fromlist=["SkipCounter"]).SkipCounter())[:6]
    ctx = EvalContext(model.backbone.tokenizer, 48, 4, False, False)
    cached = tasks["clone"].probabilities(model, examples, ctx, "x")
    with torch.no_grad():
        direct = torch.sigmoid(tasks["clone"].logits(model, tasks["clone"].collate(examples, ctx.tokenizer, 48))).numpy()
    assert cached == pytest.approx(direct, abs=1e-5)


def test_search_starts_from_the_backbone_embedding_space(task_files, tmp_path):
    """At step 0 the identity-initialised head ranks exactly as the frozen backbone's cosine does."""
    config = resolve_config(tiny_config(task_files, tmp_path / "run", bf16=False))
    task = build_task("search")
    model, _ = build_model(config, {"search": task})
    pooled = torch.randn(5, model.backbone.hidden_size)
    embedded = model.heads["search"](pooled)
    assert torch.allclose(embedded[:, : pooled.shape[1]], torch.nn.functional.normalize(pooled, dim=-1), atol=1e-6)
    assert embedded[:, pooled.shape[1] :].abs().max() == 0
    model.eval()
    ctx = EvalContext(model.backbone.tokenizer, 48, 4, False, False)
    evalset = task.read_eval("search", task_files["search"]["test"], __import__("mtpeft.data", fromlist=["SkipCounter"]).SkipCounter(), None, 0)
    scores = task.scores(model, evalset.data, ctx, "x")

    class FrozenCosine(torch.nn.Module):  # the backbone alone: normalised pooled states
        def forward(self, pooled):
            return torch.nn.functional.normalize(pooled, dim=-1)

    head, model.heads["search"] = model.heads["search"], FrozenCosine()
    frozen = task.scores(model, evalset.data, ctx, "x")
    assert scores == pytest.approx(frozen, abs=1e-5)
    model.heads["search"] = head
    random_start = build_task("search", {"init": "random"}).make_head(model.backbone.hidden_size)
    assert not torch.allclose(random_start.proj.weight, model.heads["search"].proj.weight)


def test_attention_dropout_is_off_by_default_and_configurable():
    source = str(tiny_backbone_dir("bert"))
    assert load_pretrained(source, attention_dropout=0.0).model.config.attention_probs_dropout_prob == 0.0
    assert load_pretrained(source, attention_dropout=0.3, hidden_dropout=0.2).model.config.hidden_dropout_prob == 0.2


def test_function_disjoint_clone_validation():
    pairs = [Example(f"{a}\t{b}", f"f{a}", int((a + b) % 3 == 0), f"f{b}") for a in range(20) for b in range(a + 1, 20)]
    task = build_task("clone", {"unseen_valid": 0.3})
    train, (unseen,) = task.carve_valid(pairs, seed=1)
    held = {i for e in unseen.data for i in e.id.split("\t")}
    assert unseen.name == "clone/unseen" and len(held) == 6 and len(unseen.data) == 15
    assert not held & {i for e in train for i in e.id.split("\t")}  # held functions never train
    assert len(train) == len(pairs) - 15 - 6 * 14  # pairs with one held function are dropped
    assert build_task("clone").carve_valid(pairs, 1) == (pairs, [])
    with pytest.raises(MtpeftError, match="unseen_valid"):
        build_task("clone", {"unseen_valid": 0.01}).carve_valid(pairs, 1)


def test_frozen_weights_in_bf16_keep_trainables_fp32(task_files, tmp_path):
    from mtpeft.model.precision import bf16_supported

    if not bf16_supported():
        pytest.skip("the CPU has no native bf16")
    config = resolve_config(tiny_config(task_files, tmp_path / "run") | {"backbone": {"name": "tiny-bert", "max_len": 48, "frozen_bf16": True}})
    model, _ = build_model(config, {"defect": build_task("defect")})
    dtypes = {(p.requires_grad, p.dtype) for p in model.backbone.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    inputs = model.backbone.tokenizer(["int f() { return 1; }"], return_tensors="pt")
    pooled = model.encode({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]})
    assert pooled.dtype == torch.float32 and torch.isfinite(pooled).all()  # runs without the caller's autocast


def test_the_pair_head_is_the_study_s_width_not_half_its_4h_input():
    # 4h -> h/2 -> 1: a checkpoint with two Adam moments stays a few MB at h = 384
    head = PairHead(384)
    assert sum(p.numel() for p in head.parameters()) == 4 * 384 * 192 + 192 + 192 + 1
