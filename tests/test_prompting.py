"""The prompting baseline: answer parsing, BM25, re-ranking MRR, the local back-end on a tiny causal
LM, the OpenAI-compatible back-end against a fake local server (errors, timeouts, resuming), the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from mtpeft.baselines.backends import BackendError, LocalBackend, OpenAIBackend
from mtpeft.baselines.bm25 import BM25Index, code_tokens
from mtpeft.baselines.parsing import decide, parse_yes_no
from mtpeft.baselines.prompting import (
    AnswerCache, Settings, fill, load_prompts, rerank_scores, run_prompt_baseline,
)
from mtpeft.cli import main
from mtpeft.config import default_config_path, load_yaml, resolve_config
from mtpeft.errors import MtpeftError
from mtpeft.evaluation.metrics import mrr

DEFECT_WORDS = load_prompts()["tasks"]["defect"]
POS, NEG = DEFECT_WORDS["positive_words"], DEFECT_WORDS["negative_words"]


# ---- parsing --------------------------------------------------------------------------------------

PARSE_TABLE = [
    # (answer, expected) -- expected: 1 yes, 0 no, None unparseable
    ("Yes", 1), ("Yes.", 1), ("yes", 1), ("  YES!  ", 1), ("No", 0), ("no.", 0), ("NO", 0),
    ("**No**", 0), ("**Yes**, it is.", 1), ("`yes`", 1), ("# No", 0), ('"Yes"', 1),
    ("Answer: yes", 1), ("Answer: No", 0), ("answer - no", 0), ("Final answer: YES", 1),
    ("I think the answer is no", 0), ("The answer is yes, because strcpy overflows.", 1),
    ("My verdict: no.", 0), ("True", 1), ("false", 0), ("y", 1), ("N", 0), ("Nope.", 0), ("Yeah", 1),
    ("No, it is not vulnerable", 0), ("Yes, the function is vulnerable to a buffer overflow.", 1),
    ("No, the C function `mix_2f", 0), ("Yes, the C function `read_data`", 1),
    ("yes and no", None), ("Yes or no?", None), ("yes/no", None), ("No, yes", None),
    ("", None), ("   ", None), (None, None), ("I cannot tell.", None), ("N/A", None), ("Not sure", None),
    ("The function is vulnerable", 1), ("The function is not vulnerable.", 0),
    ("There is no vulnerability in this code.", 0), ("This code is safe.", 0), ("It is unsafe.", 1),
    ("Not vulnerable", 0), ("The function is vulnerable, not safe", None),
    ("I would say yes", 1), ("It's a no from me", 0), ("Nobody knows", None), ("Yesterday it worked", None),
]


@pytest.mark.parametrize("answer,expected", PARSE_TABLE)
def test_parse_yes_no_table(answer, expected):
    assert parse_yes_no(answer, POS, NEG) == expected


def test_task_words_do_not_match_inside_longer_words():
    flaky = load_prompts()["tasks"]["flaky"]
    assert parse_yes_no("It is non-deterministic.", flaky["positive_words"], flaky["negative_words"]) == 1
    assert parse_yes_no("The test is deterministic.", flaky["positive_words"], flaky["negative_words"]) == 0
    clone = load_prompts()["tasks"]["clone"]
    assert parse_yes_no("They are not clones.", clone["positive_words"], clone["negative_words"]) == 0
    assert parse_yes_no("These methods are clones", clone["positive_words"], clone["negative_words"]) == 1


def test_unparseable_is_scored_negative():
    assert decide(None) == 0 and decide(1) == 1 and decide(0) == 0


# ---- BM25 and re-ranking --------------------------------------------------------------------------

def test_code_tokens_split_identifiers():
    tokens = code_tokens("def readFileLines(my_path): return HTTPServer2")
    for token in ("readfilelines", "read", "file", "lines", "my_path", "my", "path", "httpserver2", "http", "server"):
        assert token in tokens


def test_bm25_matches_rank_bm25():
    from rank_bm25 import BM25Okapi

    docs = ["def read_file(path): return open(path).read()", "int main(int argc) { return 0; }",
            "public void readFile(File f) { reader.close(); }", "sum two numbers", "def add(a, b): return a + b",
            "static int sum(int *xs, int n) { int s = 0; return s; }"]
    index = BM25Index(docs)
    reference = BM25Okapi([code_tokens(d) for d in docs])
    for query in ("read a file", "sum numbers numbers", "return int", "nothing matches"):
        assert np.allclose(index.scores(query), reference.get_scores(code_tokens(query)))
    assert np.allclose(index.score_matrix(["read a file", "sum"])[1], reference.get_scores(["sum"]))
    assert index.top("sum numbers", 2)[0] == 3


def test_rerank_mrr_hand_computed():
    # BM25 scores of 6 codes for 3 queries; the LLM re-ranks the top 3 of each
    lexical = np.array([
        [0.5, 3.0, 2.0, 1.0, 0.0, 2.5],   # BM25 order: 1, 5, 2, 3, 0, 4
        [0.5, 3.0, 2.0, 1.0, 0.0, 2.5],
        [4.0, 1.0, 3.0, 2.0, 0.5, 0.2],   # BM25 order: 0, 2, 3, 1, 4, 5
    ])
    answers = [5, 3, 2]
    # BM25 alone: ranks 2, 4, 2 -> MRR (1/2 + 1/4 + 1/2) / 3
    assert mrr(lexical, answers)["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 2) / 3)
    tops = [[1, 5, 2], [1, 5, 2], [0, 2, 3]]
    llm = [[0, 0, 1],  # q0: only code 2 gets "yes" -> order 2, 1, 5 | 3, 0, 4 -> answer 5 at rank 3
           [1, 1, 1],  # q1: all yes -> BM25 order kept; answer 3 is outside the top 3 -> rank 4
           [0, 1, 1]]  # q2: codes 2 and 3 say yes -> order 2, 3, 0 | 1, 4, 5 -> answer 2 at rank 1
    final = np.stack([rerank_scores(lexical[q], tops[q], llm[q]) for q in range(3)])
    assert list(np.argsort(-final[0], kind="stable")) == [2, 1, 5, 3, 0, 4]
    assert list(np.argsort(-final[2], kind="stable")) == [2, 3, 0, 1, 4, 5]
    assert mrr(final, answers)["mrr"] == pytest.approx((1 / 3 + 1 / 4 + 1) / 3)


def test_rerank_ties_share_a_score():
    final = rerank_scores(np.array([1.0, 1.0, 0.0]), [0, 1], [1, 1])
    assert final[0] == final[1] > final[2]
    assert mrr(final[None, :], [1])["mrr"] == 0.5  # a tie counts against the answer (pessimistic rank)


# ---- templates and cache --------------------------------------------------------------------------

def test_fill_keeps_code_braces_and_unknown_braces():
    assert fill("A {code} B {other}", {"code": "int f() { return {x}; }"}) == "A int f() { return {x}; } B {other}"


def test_prompts_override_and_validation(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("tasks:\n  defect:\n    user: 'Buggy? {code}'\n", encoding="utf-8")
    prompts = load_prompts(path)
    assert prompts["tasks"]["defect"]["user"] == "Buggy? {code}"
    assert prompts["tasks"]["defect"]["positive_words"]  # kept from the bundled file
    path.write_text("tasks:\n  clone:\n    user: 'Same? {code_a}'\n", encoding="utf-8")
    with pytest.raises(MtpeftError, match="code_b"):
        load_prompts(path)
    path.write_text("yes: Y\n", encoding="utf-8")
    with pytest.raises(MtpeftError, match="unknown key"):
        load_prompts(path)


def test_cache_ignores_a_torn_last_line(tmp_path):
    cache = AnswerCache(tmp_path / "answers.jsonl")
    record = {"task": "defect", "set": "defect", "id": "1", "shots": 0, "model": "m", "prompt_sha1": "abc", "answer": "Yes"}
    cache.add([record])
    with open(tmp_path / "answers.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"task": "defect", "set": "de')
    again = AnswerCache(tmp_path / "answers.jsonl")
    assert len(again.records) == 1
    key = next(iter(again.records))
    assert again.get(key, "abc")["answer"] == "Yes"
    assert again.get(key, "changed prompt") is None


# ---- the local back-end on a tiny causal LM --------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mtpeft.model.tiny import build_tiny_backbone

    directory = build_tiny_backbone(tmp_path_factory.mktemp("tiny-lm"), "llama", hidden=32, layers=1)
    config = LlamaConfig.from_pretrained(directory)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return directory


def sample_config(tasks: list[str]):
    data = load_yaml(default_config_path())
    data["tasks"] = {t: data["tasks"][t] for t in tasks}
    return resolve_config(data)


SMALL = dict(max_per_task=3, top_k=2, max_input_tokens=48, shot_tokens=24, context_tokens=512, batch_size=4, progress=False)


def test_local_backend_end_to_end_and_resume(tiny_lm, tmp_path):
    backend = LocalBackend(str(tiny_lm))
    prompts = load_prompts()
    config = sample_config(["defect", "clone", "search"])
    out = tmp_path / "run"
    result = run_prompt_baseline(config, backend, prompts, Settings(shots=1, **SMALL), out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"defect", "clone", "search", "search/cosqa"}
    assert set(metrics["test"]["defect"]) == {"accuracy", "f1", "precision", "recall"}
    assert set(metrics["test"]["clone"]) == {"f1", "precision", "recall"}
    assert set(metrics["test"]["search"]) == {"mrr", "bm25_mrr"}
    # a random model answers nonsense: it is counted, and scored negative
    summary = result["summary"]["sets"]
    lines = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    defect = [r for r in lines if r["task"] == "defect"]
    assert len(defect) == 3 and summary["defect"]["unparseable"] == sum(r["parsed"] is None for r in defect)
    assert summary["search"]["prompts"] == 3 * 2 and summary["search"]["queries"] == 3
    assert summary["search"]["corpus"] > 3  # the cap limits queries, the corpus stays whole
    assert 0 <= summary["defect"]["nearest_demo_agreement"] <= 1
    assert "accuracy" in summary["defect"]["nearest_demo_label_scores"]
    for set_name in ("search", "search/cosqa"):
        # re-ranking only moves the top 2: the MRR can only differ from BM25's for those queries
        assert 0 < metrics["test"][set_name]["mrr"] <= 1
    # rerun: every answer comes from the cache
    calls = []
    original = backend.generate
    backend.generate = lambda conversations, n: calls.append(len(conversations)) or original(conversations, n)
    again = run_prompt_baseline(config, backend, prompts, Settings(shots=1, **SMALL), out)
    assert calls == [] and again["metrics"] == result["metrics"]
    assert again["summary"]["prompts_sent"] == 0 and result["summary"]["prompts_sent"] == 3 + 3 + 2 * 3 * 2
    # a smaller cap is a subset of the seeded sample: answered from a shared cache file alone
    smaller = Settings(shots=1, **SMALL | {"max_per_task": 2})
    sub = run_prompt_baseline(config, backend, prompts, smaller, tmp_path / "sub", cache=out / "answers.jsonl")
    assert calls == [] and sub["summary"]["sets"]["defect"]["examples"] == 2
    assert not (tmp_path / "sub" / "answers.jsonl").exists()
    # a different shot count is a different cache entry
    run_prompt_baseline(sample_config(["defect"]), backend, prompts, Settings(shots=0, **SMALL), out)
    assert sum(calls) == 3


def test_local_backend_is_deterministic_and_logprob(tiny_lm, tmp_path):
    backend = LocalBackend(str(tiny_lm))
    conversation = [{"role": "system", "content": "Answer Yes or No."}, {"role": "user", "content": "int f() { return 0; }"}]
    short = [{"role": "user", "content": "x"}]
    first = backend.generate([conversation, short], 4)
    assert first == backend.generate([conversation, short], 4)
    assert backend.generate([conversation], 4) == first[:1]  # left padding does not change the answer
    probabilities = backend.yes_probability([conversation, short], ["Yes"], ["No"])
    assert all(0.0 < p < 1.0 for p in probabilities)
    out = tmp_path / "logprob"
    result = run_prompt_baseline(sample_config(["flaky", "search"]), backend, load_prompts(),
                                 Settings(decision="logprob", **SMALL), out)
    assert result["summary"]["sets"]["flaky"]["unparseable"] == 0
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert all(r["p_yes"] is not None for r in records)


def test_prompts_are_cut_to_fit_the_context(tiny_lm, tmp_path):
    backend = LocalBackend(str(tiny_lm))
    settings = Settings(shots=3, max_per_task=2, max_input_tokens=400, shot_tokens=400, context_tokens=300, progress=False)
    result = run_prompt_baseline(sample_config(["defect"]), backend, load_prompts(), settings, tmp_path / "fit")
    info = result["summary"]["sets"]["defect"]
    assert info["demos_dropped"] > 0 and info["truncated_inputs"] > 0
    records = [json.loads(line) for line in (tmp_path / "fit" / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 2


# ---- the OpenAI-compatible back-end against a fake server ------------------------------------------

class FakeOpenAI:
    """A chat-completions server on 127.0.0.1: answers "Yes" when the last user turn mentions
    strcpy, else "No"; ``mode`` switches it to HTTP 500 or to answering slowly."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.fail_after: int | None = None  # succeed this many times, then fail with 500
        self.delay = 1.0
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ok_count = sum(1 for r in fake.requests if r.get("_ok"))
                fail = fake.mode == "error" or (fake.fail_after is not None and ok_count >= fake.fail_after)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                if fake.mode == "slow":
                    time.sleep(fake.delay)
                body["_ok"] = not fail and fake.mode != "slow"
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                if fail:
                    payload = b'{"error": {"message": "model overloaded"}}'
                    self.send_response(500)
                else:
                    text = "Yes." if "strcpy" in body["messages"][-1]["content"] else "**No**"
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answered(self) -> int:
        return sum(1 for r in self.requests if r.get("_ok"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_server():
    server = FakeOpenAI()
    yield server
    server.close()


def http_settings(**extra) -> Settings:
    return Settings(**{"max_per_task": 6, "top_k": 2, "max_input_tokens": 200, "batch_size": 2, "progress": False} | extra)


def test_openai_backend_success(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    backend = OpenAIBackend(fake_server.url, "fake-model", api_key_env="FAKE_KEY", retry_wait=0)
    result = run_prompt_baseline(sample_config(["defect", "search"]), backend, load_prompts(), http_settings(shots=1), tmp_path / "o")
    assert set(result["metrics"]["test"]) == {"defect", "search", "search/cosqa"}
    assert result["summary"]["sets"]["defect"]["unparseable"] == 0  # "Yes." and "**No**" both parse
    first = fake_server.requests[0]
    assert first["model"] == "fake-model" and first["temperature"] == 0 and first["max_tokens"] == 6
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["role"] == "user"
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "user"]  # 1-shot
    assert fake_server.headers[0]["Authorization"] == "Bearer sk-test"
    records = [json.loads(line) for line in (tmp_path / "o" / "answers.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records} == {"openai:fake-model"}
    assert len(records) == 6 + 2 * 6 * 2


def test_openai_backend_server_error_then_resume(fake_server, tmp_path, capsys):
    fake_server.fail_after = 3
    out = tmp_path / "resume"
    args = ["prompt-baseline", "--backend", "openai", "--base-url", fake_server.url, "--model", "fake",
            "--tasks", "defect", "--max-per-task", "6", "--batch-size", "1", "--retries", "0", "--no-progress",
            "--output", str(out)]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0, "one clean line, no traceback"
    assert "HTTP 500" in error and "model overloaded" in error and "run the same command again to resume" in error
    assert "3 of 6 answers" in error
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3
    fake_server.fail_after = None
    assert main(args) == 0
    assert fake_server.answered() == 6  # 3 before the failure + the 3 missing ones, none asked twice
    assert "defect" in json.loads((out / "metrics.json").read_text())["test"]


def test_openai_backend_retries_then_gives_up(fake_server):
    fake_server.mode = "error"
    backend = OpenAIBackend(fake_server.url, "fake", retries=2, retry_wait=0)
    with pytest.raises(BackendError, match=r"failed after 3 attempt\(s\): HTTP 500"):
        backend.generate([[{"role": "user", "content": "hi"}]], 4)
    assert len(fake_server.requests) == 3


def test_openai_backend_timeout_then_resume(fake_server, tmp_path):
    out = tmp_path / "timeout"
    config = sample_config(["defect"])
    fake_server.mode = "slow"
    fake_server.delay = 0.6
    slow = OpenAIBackend(fake_server.url, "fake", timeout=0.2, retries=1, retry_wait=0, workers=2)
    with pytest.raises(MtpeftError, match=r"no answer within 0.2 s \(timeout\).*run the same command again to resume"):
        run_prompt_baseline(config, slow, load_prompts(), http_settings(max_per_task=4), out)
    fake_server.mode = "ok"
    backend = OpenAIBackend(fake_server.url, "fake", timeout=5, retry_wait=0)
    result = run_prompt_baseline(config, backend, load_prompts(), http_settings(max_per_task=4), out)
    assert result["summary"]["sets"]["defect"]["examples"] == 4


def test_openai_backend_refusal_is_not_retried(fake_server):
    backend = OpenAIBackend(fake_server.url.replace("/v1", "/wrong"), "fake", retries=3, retry_wait=0)
    with pytest.raises(BackendError, match="refused .*HTTP 404"):
        backend.generate([[{"role": "user", "content": "hi"}]], 4)


def test_openai_backend_connection_refused():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "fake", retries=0, timeout=2)
    with pytest.raises(BackendError, match="connection failed"):
        backend.generate([[{"role": "user", "content": "hi"}]], 4)


def test_openai_backend_needs_a_url():
    with pytest.raises(MtpeftError, match="--base-url"):
        OpenAIBackend("", "fake")
    with pytest.raises(MtpeftError, match="FAKE_MISSING_KEY"):
        OpenAIBackend("http://x/v1", "fake", api_key_env="FAKE_MISSING_KEY", api_key_required=True)


# ---- the CLI --------------------------------------------------------------------------------------

def test_cli_parser_does_not_import_torch():
    code = "import sys, mtpeft.cli; mtpeft.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_rejects_bad_options(capsys):
    assert main(["prompt-baseline", "--tasks", "nope"]) == 2
    assert "not in the config" in capsys.readouterr().err
    assert main(["prompt-baseline", "--top-k", "0"]) == 2
    assert "--top-k must be at least 1" in capsys.readouterr().err
    assert main(["prompt-baseline", "--backend", "openai", "--decision", "logprob", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "log-probability" in capsys.readouterr().err
    assert main(["prompt-baseline", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                 "--api-key-env", "MTPEFT_TEST_UNSET_KEY"]) == 2
    assert "MTPEFT_TEST_UNSET_KEY" in capsys.readouterr().err
