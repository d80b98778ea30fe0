"""The HTTP API over a real connection: uvicorn in a thread on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

FIXTURES = Path(__file__).parent / "fixtures" / "project"
C_CODE = "int add(int a, int b) { return a + b; }"
JAVA_TEST = "@Test public void waits() throws Exception { Thread.sleep(100); assertTrue(done); }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    import uvicorn

    from mtpeft.inference.encoder import SharedEncoder
    from mtpeft.serving.index import build_index
    from mtpeft.serving.server import Limits, create_app

    encoder = SharedEncoder.from_run(tiny_run, batch_size=8)
    index, _ = build_index(FIXTURES, encoder)
    # a wide batching window makes the concurrent requests of the batching test meet
    limits = Limits(max_body_bytes=4096, max_batch=8, batch_wait_ms=150)
    port = free_port()
    config = uvicorn.Config(create_app(encoder, index, limits), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client, encoder
    instance.should_exit = True
    thread.join(timeout=10)


def test_health_and_openapi(server):
    client, _ = server
    health = client.get("/health").json()
    assert health["status"] == "ok" and set(health["heads"]) == {"defect", "clone", "search", "flaky"}
    assert health["languages"]["defect"] == ["c"] and health["index_functions"] == 20
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/analyze", "/v1/defect", "/v1/flaky", "/v1/clone", "/v1/embed", "/v1/search"} <= set(paths)


def test_heads_answer_as_the_in_process_encoder(server):
    client, encoder = server
    response = client.post("/v1/analyze", json={"functions": [
        {"code": C_CODE, "language": "c"}, {"code": JAVA_TEST, "language": "java", "is_test": True},
        {"code": "def f():\n    return 1", "language": "python"}]})
    assert response.status_code == 200
    results = response.json()["results"]
    expected = encoder.run_heads([C_CODE, JAVA_TEST], ["defect", "flaky"]).probabilities
    assert results[0]["defect"]["p"] == pytest.approx(expected["defect"][0], abs=1e-5)
    assert results[0]["defect"]["in_domain"] is True and "flaky" not in results[0]
    assert results[1]["flaky"]["p"] == pytest.approx(expected["flaky"][1], abs=1e-5) and results[1]["flaky"]["in_domain"] is True
    assert results[1]["defect"]["in_domain"] is False and results[2]["defect"]["in_domain"] is False
    defect = client.post("/v1/defect", json={"codes": [C_CODE]}).json()
    assert defect["results"][0]["p"] == pytest.approx(expected["defect"][0], abs=1e-5)
    assert defect["results"][0]["in_domain"] is None and defect["trained_languages"] == ["c"]
    clone = client.post("/v1/clone", json={"pairs": [{"a": C_CODE, "b": JAVA_TEST}]}).json()
    expected_clone = encoder.clone_probabilities([(0, 1)], [C_CODE, JAVA_TEST], None)
    assert clone["results"][0]["p"] == pytest.approx(expected_clone[0], abs=1e-5)
    vectors = np.array(client.post("/v1/embed", json={"codes": [C_CODE, JAVA_TEST]}).json()["embeddings"])
    assert vectors.shape == (2, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


def test_search_over_the_index(server):
    client, _ = server
    found = client.post("/v1/search", json={"query": "def add(a, b):\n    return a + b", "k": 3}).json()["results"]
    assert len(found) == 3 and {"score", "file", "line", "name", "in_domain"} <= set(found[0])
    assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)


@pytest.mark.parametrize("send, status, message", [
    (dict(content=b'{"codes": ["int f();"', headers={"content-type": "application/json"}), 400, "malformed JSON"),
    (dict(json={"codes": "int f();"}), 422, "codes: Input should be a valid list"),
    (dict(json={"codes": [5]}), 422, "codes.0: Input should be a valid string"),
    (dict(json={"codes": ["  \n"]}), 422, "codes[0] is empty"),
    (dict(json={"codes": []}), 422, "codes: List should have at least 1 item"),
    (dict(json={"codes": ["int f();"] * 9}), 413, "9 codes in one request; the limit is 8"),
    (dict(json={"codes": ["x" * 5000]}), 413, "larger than the limit of 4096 bytes"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, send, status, message):
    client, _ = server
    response = client.post("/v1/defect", **send)
    assert response.status_code == status and message in response.json()["detail"]
    assert client.get("/health").status_code == 200
    assert client.post("/v1/defect", json={"codes": [C_CODE]}).status_code == 200


def test_a_chunked_body_over_the_limit_is_cut_off(server):
    client, _ = server

    def chunks():
        yield b'{"codes": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    response = client.post("/v1/defect", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.post("/v1/search", json={"query": "", "k": 1}).json()["detail"] == "query: query is empty"


def test_concurrent_requests_share_backbone_passes(server):
    client, _ = server
    before = client.get("/health").json()
    codes = [f"int f{i}(int x) {{ return x * {i} + {i * 7}; }}" for i in range(8)]  # distinct: no cache hits
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda code: client.post("/v1/defect", json={"codes": [code]}), codes))
    assert all(r.status_code == 200 for r in responses)
    after = client.get("/health").json()
    assert after["batched_requests"] - before["batched_requests"] == 8
    assert after["passes"] - before["passes"] < 8  # some requests rode in another's pass
