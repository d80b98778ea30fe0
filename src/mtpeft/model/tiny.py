"""Tiny randomly initialised backbones (BERT or Llama) with a tokenizer trained in-process.

They make the whole pipeline runnable without any download: tests and smoke runs use them.
Built deterministically (fixed seed, fixed corpus) and cached under the mtpeft cache folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from mtpeft.errors import MtpeftError
from mtpeft.model.cache import atomic_directory, cache_dir

ARCHS = ("bert", "llama")

# a little of each language the tasks use, so the tokenizer has sensible pieces
SEED_CORPUS = [
    "int main(int argc, char **argv) { char buf[16]; strcpy(buf, argv[1]); return 0; }",
    "static void free_buffer(AVBuffer *buf) { if (!buf) return; av_free(buf->data); av_free(buf); }",
    "public class BigbenchClone { public static void copy(String src, String dest) throws IOException { } }",
    "public void readFile(File f) { BufferedReader r = new BufferedReader(new FileReader(f)); r.close(); }",
    "@Test public void testTimeout() throws Exception { Thread.sleep(1000); assertTrue(server.isRunning()); }",
    "def find_user(name):\n    return [u for u in users if u.name == name]",
    "def to_json(hash)\n  JSON.generate(hash)\nend",
    "returns the sum of two numbers; check if a variable is iterable; read a file line by line",
]


def _word_piece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


def _byte_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def build_tiny_backbone(directory: Path, arch: str = "bert", hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random model + tokenizer to ``directory`` (loadable with ``from_pretrained``)."""
    if arch not in ARCHS:
        raise MtpeftError(f"unknown tiny architecture {arch!r}; valid: {', '.join(ARCHS)}")
    texts = SEED_CORPUS * 4
    # a private RNG: building the cached model on first use must not re-seed the caller's run
    # (else the first run on a fresh cache would differ from every later one)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "bert":
            tokenizer = _word_piece(texts, vocab_size=400)
            config = BertConfig(
                vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                intermediate_size=hidden * 2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
            )
            model = BertModel(config)
        else:
            tokenizer = _byte_bpe(texts, vocab_size=400)
            config = LlamaConfig(
                vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=hidden * 2, max_position_embeddings=512,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )
            model = LlamaModel(config)
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_backbone_dir(arch: str) -> Path:
    """The cached tiny model of an architecture, built on first use."""
    def build(out: Path) -> None:
        # the builder seeds torch itself: keep the caller's random state (a run's seeded
        # initialisation must not depend on whether the cache already held the model)
        with torch.random.fork_rng(devices=[]):
            build_tiny_backbone(out, arch)

    return atomic_directory(cache_dir() / f"tiny-{arch}-v1", build)
