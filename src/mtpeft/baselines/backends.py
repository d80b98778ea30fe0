"""Chat back-ends for the prompting baseline: a local transformers model and any OpenAI-compatible
chat-completions endpoint. Both answer lists of chat conversations deterministically:

- ``LocalBackend``: greedy decoding (no sampling) of at most ``max_new_tokens`` tokens after the
  model's chat template, left-padded batches; or, with ``decision="logprob"``, one forward pass
  that compares the next-token probabilities of the yes and no answers.
- ``OpenAIBackend``: ``POST {base_url}/chat/completions`` with ``temperature: 0``, through the
  standard library only, with a timeout, retries on 5xx / 429 / network errors / timeouts, and a
  clear ``MtpeftError`` after the last failure.

Only this module's ``LocalBackend`` imports torch / transformers, and only when it is built.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from mtpeft.errors import MtpeftError

Message = dict[str, str]
Conversation = list[Message]
CHARS_PER_TOKEN = 4  # the HTTP back-end has no tokenizer: budgets are counted as 4 characters a token


class BackendError(MtpeftError):
    """A back-end failed; ``partial`` holds the answers (by position) that did arrive before it."""

    def __init__(self, message: str, partial: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.partial = dict(partial or {})


class Backend:
    """What the evaluation driver needs from a chat model."""

    kind = "backend"
    model_name = ""
    supports_logprob = False

    @property
    def key(self) -> str:
        """Identifies the model in the answer cache."""
        return f"{self.kind}:{self.model_name}"

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """The head of ``text`` within ``max_tokens``, and whether anything was cut."""
        limit = max(0, max_tokens) * CHARS_PER_TOKEN
        return (text, False) if len(text) <= limit else (text[:limit], True)

    def prompt_tokens(self, conversation: Conversation) -> int:
        """Tokens the whole prompt takes (used to keep it inside the context window)."""
        return sum(self.count_tokens(m["content"]) + 4 for m in conversation) + 2

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[str]:
        raise NotImplementedError

    def yes_probability(self, conversations: Sequence[Conversation], yes: Sequence[str], no: Sequence[str]) -> list[float]:
        raise MtpeftError(f"the {self.kind} back-end cannot score answers by log-probability; use --decision generate")

    def close(self) -> None:
        pass


# ---- local transformers model ----------------------------------------------------------------------

def causal_lm_source(name: str) -> Path | str:
    """Something ``AutoModelForCausalLM.from_pretrained`` loads offline where possible: the backbone
    resolver already converts ``smollm2`` / ``.gguf`` files into a cached causal LM with its head."""
    from mtpeft.model import backbone

    return backbone.resolve(name)


class LocalBackend(Backend):
    """A causal LM run in-process with transformers (CPU unless CUDA is there)."""

    kind = "local"
    supports_logprob = True

    def __init__(self, name: str, threads: int | None = None, model: Any = None, tokenizer: Any = None,
                 device: str | None = "auto") -> None:
        import torch

        from mtpeft.device import resolve_device

        self.torch = torch
        self.device = resolve_device(device)  # before loading: a missing GPU fails at once
        if threads:
            torch.set_num_threads(threads)
        self.model_name = name
        if model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            source = causal_lm_source(name)
            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
                model, info = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
            except (OSError, ValueError) as exc:
                raise MtpeftError(
                    f"cannot load the model {name!r} as a causal language model ({exc}). Offline, only smollm2, "
                    ".gguf files, local directories and models already in the Hugging Face cache can be loaded."
                ) from None
            missing = [k for k in info.get("missing_keys", []) if "lm_head" in k]
            if missing and not getattr(model.config, "tie_word_embeddings", False):
                raise MtpeftError(f"{source} has no language-model head (missing {missing[0]}): it is not a causal LM")
        self.model = model.to(self.device).eval()
        # bf16 autocast on a GPU that has it; the CPU keeps float32 (the answers stay those of the CPU runs)
        self.bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "left"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text, False
        return self.tokenizer.decode(ids[: max(0, max_tokens)]), True

    def render(self, conversation: Conversation) -> str:
        """The prompt text: the model's chat template, or a plain transcript when it has none."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
        return "\n\n".join(lines) + "\n\nAssistant:"

    def prompt_tokens(self, conversation: Conversation) -> int:
        return len(self.tokenizer(self.render(conversation), add_special_tokens=False)["input_ids"])

    def encode(self, conversations: Sequence[Conversation]) -> dict[str, Any]:
        texts = [self.render(c) for c in conversations]
        batch = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def autocast(self) -> Any:
        return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=self.bf16)

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[str]:
        if not conversations:
            return []
        batch = self.encode(conversations)
        eos = [t for t in {self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)} if t is not None]
        flat_eos = sorted({e for t in eos for e in (t if isinstance(t, list) else [t])})
        with self.torch.no_grad(), self.autocast():
            out = self.model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=flat_eos or None,
                temperature=None, top_p=None, top_k=None,
            )
        new = out[:, batch["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]

    def answer_ids(self, words: Sequence[str]) -> list[int]:
        """First token ids of the answer words, with and without a leading space / capital."""
        ids = set()
        for word in words:
            for variant in {word, word.lower(), word.capitalize(), " " + word, " " + word.lower(), " " + word.capitalize()}:
                pieces = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
                if pieces:
                    ids.add(pieces[0])
        return sorted(ids)

    def yes_probability(self, conversations: Sequence[Conversation], yes: Sequence[str], no: Sequence[str]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) of the next token after the prompt: one forward pass."""
        if not conversations:
            return []
        yes_ids, no_ids = self.answer_ids(yes), self.answer_ids(no)
        overlap = set(yes_ids) & set(no_ids)
        yes_ids, no_ids = [i for i in yes_ids if i not in overlap], [i for i in no_ids if i not in overlap]
        batch = self.encode(conversations)
        with self.torch.no_grad(), self.autocast():
            logits = self.model(**batch).logits[:, -1, :].float()  # left padding: the last column is real
        logp = self.torch.log_softmax(logits, dim=-1)
        p_yes = self.torch.logsumexp(logp[:, yes_ids], dim=-1)
        p_no = self.torch.logsumexp(logp[:, no_ids], dim=-1)
        return self.torch.sigmoid(p_yes - p_no).tolist()


# ---- OpenAI-compatible HTTP endpoint ----------------------------------------------------------------

class OpenAIBackend(Backend):
    """Any server speaking the OpenAI chat-completions API (OpenAI, vLLM, llama.cpp, Ollama ...)."""

    kind = "openai"

    def __init__(
        self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 60.0,
        retries: int = 2, retry_wait: float = 2.0, workers: int = 4, api_key_required: bool = False,
    ) -> None:
        if not base_url:
            raise MtpeftError("the openai back-end needs --base-url (e.g. http://localhost:8000/v1)")
        if not base_url.startswith(("http://", "https://")):
            raise MtpeftError(f"--base-url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model_name = model
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_required and not self.api_key:
            raise MtpeftError(f"the environment variable {api_key_env} (the API key) is not set")
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.retry_wait = float(retry_wait)
        self.workers = max(1, int(workers))

    def request(self, conversation: Conversation, max_new_tokens: int) -> str:
        body = json.dumps({
            "model": self.model_name, "messages": conversation, "temperature": 0, "max_tokens": max_new_tokens,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_wait * attempt)
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return self.content(payload)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200].strip()
                problem = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
                if exc.code < 500 and exc.code not in (408, 429):
                    raise BackendError(f"openai back-end: POST {self.url} was refused ({problem})") from None
            except (TimeoutError, OSError) as exc:  # URLError, connection reset, socket timeout
                reason = getattr(exc, "reason", exc)
                timed_out = isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError) or "timed out" in str(reason)
                problem = f"no answer within {self.timeout:g} s (timeout)" if timed_out else f"connection failed ({reason})"
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problem = f"the reply is not JSON ({exc})"
        raise BackendError(f"openai back-end: POST {self.url} failed after {self.retries + 1} attempt(s): {problem}")

    def content(self, payload: Any) -> str:
        try:
            text = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"openai back-end: unexpected reply from {self.url}: {json.dumps(payload)[:200]}") from None
        return (text or "").strip()

    def generate(self, conversations: Sequence[Conversation], max_new_tokens: int) -> list[str]:
        """Requests run on up to ``workers`` threads; if one fails, the answers that did arrive are
        handed back in ``BackendError.partial`` so they can be cached."""
        results: dict[int, str] = {}
        failure: BackendError | None = None
        with ThreadPoolExecutor(max_workers=min(self.workers, max(1, len(conversations)))) as pool:
            futures = {pool.submit(self.request, c, max_new_tokens): i for i, c in enumerate(conversations)}
            for future, index in futures.items():
                try:
                    results[index] = future.result()
                except BackendError as error:
                    failure = failure or error
        if failure is not None:
            raise BackendError(str(failure), results)
        return [results[i] for i in range(len(conversations))]


def make_backend(kind: str, model: str, **options: Any) -> Backend:
    if kind == "local":
        return LocalBackend(model, threads=options.get("threads"), device=options.get("device"))
    if kind == "openai":
        return OpenAIBackend(
            options.get("base_url") or "", model, api_key_env=options.get("api_key_env") or "OPENAI_API_KEY",
            timeout=options.get("timeout", 60.0), retries=options.get("retries", 2),
            retry_wait=options.get("retry_wait", 2.0), workers=options.get("workers", 4),
            api_key_required=bool(options.get("api_key_required")),
        )
    raise MtpeftError(f"unknown back-end {kind!r}; valid: local, openai")
