"""``mtpeft serve``: the four tasks and code search over HTTP (FastAPI + uvicorn).

Binds 127.0.0.1 unless told otherwise. Requests are bounded (body bytes, functions per request);
concurrent requests are micro-batched into one backbone pass (``batcher.py``), and every head
reads that pass. Bad requests (malformed JSON, wrong types, empty code, oversize) get a 4xx with
one clear message, and the server keeps serving. The OpenAPI description is at ``/openapi.json``
(``/docs`` renders it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from mtpeft import __version__
from mtpeft.inference.encoder import SharedEncoder
from mtpeft.serving.batcher import MicroBatcher
from mtpeft.serving.index import CodeIndex


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20  # 1 MiB per request
    max_batch: int = 64  # functions (or pairs) per request
    max_batch_texts: int = 256  # texts gathered into one backbone pass across requests
    batch_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    max_k: int = 100  # search results per query
    prescore: str = "float16"  # see CodeIndex.search


# ---- request and response bodies --------------------------------------------------------------
def non_empty(code: str) -> str:
    if not code.strip():
        raise ValueError("code is empty")
    return code


class Function(BaseModel):
    code: str = Field(description="the source code of one function")
    language: str | None = Field(None, description="java | c | cpp | python | ...; decides in_domain (null: unknown)")
    is_test: bool = Field(False, description="a test method: the flaky head answers too")

    @field_validator("code")
    @classmethod
    def code_not_empty(cls, code: str) -> str:
        return non_empty(code)


class AnalyzeRequest(BaseModel):
    functions: list[Function] = Field(min_length=1, description="functions to score with every head")


class CodesRequest(BaseModel):
    codes: list[Annotated[str, Field(description="one function's source code")]] = Field(min_length=1)
    language: str | None = Field(None, description="the language of all codes, for in_domain (null: unknown)")

    @field_validator("codes")
    @classmethod
    def codes_not_empty(cls, codes: list[str]) -> list[str]:
        for i, code in enumerate(codes):
            if not code.strip():
                raise ValueError(f"codes[{i}] is empty")
        return codes


class Pair(BaseModel):
    a: str = Field(description="one function's source code")
    b: str = Field(description="the other function's source code")

    @field_validator("a", "b")
    @classmethod
    def code_not_empty(cls, code: str) -> str:
        return non_empty(code)


class CloneRequest(BaseModel):
    pairs: list[Pair] = Field(min_length=1)


class SearchRequest(BaseModel):
    query: str = Field(description="a natural-language description of the code wanted")
    k: int = Field(10, ge=1, description="results to return")

    @field_validator("query")
    @classmethod
    def query_not_empty(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("query is empty")
        return query


# ---- limits and error messages ------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a body over the limit gets 413 before the app reads it (Content-Length) or
    as soon as the streamed bytes pass the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_large(send)
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.message())
            return message

        await self.app(scope, limited, send)

    def message(self) -> str:
        return f"request body larger than the limit of {self.max_bytes} bytes"

    async def too_large(self, send: Any) -> None:
        response = JSONResponse({"detail": self.message()}, status_code=413)
        await response({"type": "http"}, None, send)


def describe_validation(error: RequestValidationError) -> tuple[int, str]:
    """One readable line: 400 for malformed JSON, 422 for a well-formed body of the wrong shape."""
    problems = error.errors()
    for problem in problems:
        if problem.get("type") == "json_invalid":
            context = problem.get("ctx", {}).get("error", "")
            return 400, f"malformed JSON: {context}".rstrip(": ")
    parts = []
    for problem in problems[:5]:
        where = ".".join(str(x) for x in problem.get("loc", ()) if x != "body") or "body"
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return 422, "; ".join(parts) + more


# ---- the app ------------------------------------------------------------------------------------
class Service:
    """What the endpoints share: the encoder, its batcher, the index and the limits."""

    def __init__(self, encoder: SharedEncoder, index: CodeIndex | None, limits: Limits) -> None:
        self.encoder = encoder
        self.index = index
        self.limits = limits
        self.batcher = MicroBatcher(encoder.pooled, limits.max_batch_texts, limits.batch_wait_ms / 1000)
        self.languages = encoder.languages()
        self.thresholds = encoder.thresholds()

    def check_batch(self, count: int, what: str) -> None:
        if count > self.limits.max_batch:
            raise HTTPException(413, f"{count} {what} in one request; the limit is {self.limits.max_batch}")

    def require(self, head: str) -> None:
        if head not in self.encoder.tasks:
            raise HTTPException(404, f"this run has no {head} head; its heads: {', '.join(self.encoder.tasks)}")

    async def pooled_by_head(self, texts: list[str], heads: list[str]) -> dict[str, torch.Tensor]:
        """Pooled states for each head: one (micro-batched) pass per distinct encoding, usually one."""
        out: dict[str, torch.Tensor] = {}
        for encoding, names in self.encoder.encoding_groups(heads).items():
            states = await self.batcher.pooled(texts, encoding)
            out |= {name: states for name in names}
        return out

    def binary(self, head: str, states: torch.Tensor, language: str | None) -> list[dict[str, Any]]:
        with torch.no_grad():
            probs = torch.sigmoid(self.encoder.model.heads[head](states).float()).tolist()
        threshold = self.thresholds.get(head, 0.5)
        in_domain = None if language is None else language.lower() in self.languages[head]
        return [{"p": round(p, 6), "flagged": p >= threshold, "in_domain": in_domain} for p in probs]


def create_app(encoder: SharedEncoder, index: CodeIndex | None = None, limits: Limits | None = None) -> FastAPI:
    service = Service(encoder, index, limits or Limits())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="mtpeft", version=__version__, lifespan=lifespan,
                  description="Vulnerability, flaky-test, clone and code-search heads of one multi-task PEFT run, "
                              "answered from one backbone pass per function. Every score says whether its "
                              "language is one the head was trained on (in_domain).")
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_body_bytes)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        status, message = describe_validation(error)
        return JSONResponse({"detail": message}, status_code=status)

    @app.get("/health", summary="liveness, the run's heads, their languages and thresholds")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "run": encoder.run_dir, "heads": list(encoder.tasks), "languages": service.languages,
                "thresholds": service.thresholds, "clone_mode": encoder.clone_mode,
                "index_functions": None if service.index is None else len(service.index),
                "passes": service.batcher.passes, "batched_requests": service.batcher.requests,
                "limits": vars(service.limits)}

    @app.post("/v1/analyze", summary="every head for each function, from one backbone pass")
    async def analyze(body: AnalyzeRequest) -> dict[str, Any]:
        service.check_batch(len(body.functions), "functions")
        heads = [h for h in ("defect", "flaky") if h in encoder.tasks]
        texts = [f.code for f in body.functions]
        states = await service.pooled_by_head(texts, heads)
        results = []
        for i, fn in enumerate(body.functions):
            entry: dict[str, Any] = {}
            for head in heads:
                if head == "flaky" and not fn.is_test:
                    continue
                entry[head] = service.binary(head, states[head][i : i + 1], fn.language)[0]
            results.append(entry)
        return {"results": results, "languages": service.languages}

    async def binary_endpoint(head: str, body: CodesRequest) -> dict[str, Any]:
        service.require(head)
        service.check_batch(len(body.codes), "codes")
        states = (await service.pooled_by_head(body.codes, [head]))[head]
        return {"results": service.binary(head, states, body.language), "threshold": service.thresholds.get(head),
                "trained_languages": service.languages[head]}

    @app.post("/v1/defect", summary="probability that each function is vulnerable (trained on C)")
    async def defect(body: CodesRequest) -> dict[str, Any]:
        return await binary_endpoint("defect", body)

    @app.post("/v1/flaky", summary="probability that each test method is flaky (trained on Java JUnit tests)")
    async def flaky(body: CodesRequest) -> dict[str, Any]:
        return await binary_endpoint("flaky", body)

    @app.post("/v1/clone", summary="probability that each pair of functions are clones (trained on Java)")
    async def clone(body: CloneRequest) -> dict[str, Any]:
        service.require("clone")
        service.check_batch(len(body.pairs), "pairs")
        texts = [p.a for p in body.pairs] + [p.b for p in body.pairs]
        n = len(body.pairs)
        pairs = [(i, n + i) for i in range(n)]
        if encoder.clone_mode == "separate":
            states = (await service.pooled_by_head(texts, ["clone"]))["clone"]
            with torch.no_grad():
                probs = encoder.clone_probabilities(pairs, texts, states)
        else:  # a joint run: each pair is one sequence, encoded on the model thread
            probs = await service.batcher.call(encoder.clone_probabilities, pairs, texts, None)
        threshold = service.thresholds.get("clone", 0.5)
        return {"results": [{"p": round(float(p), 6), "clone": bool(p >= threshold)} for p in probs],
                "threshold": threshold, "trained_languages": service.languages["clone"]}

    @app.post("/v1/embed", summary="search-head embeddings of functions (L2-normalised)")
    async def embed(body: CodesRequest) -> dict[str, Any]:
        service.require("search")
        service.check_batch(len(body.codes), "codes")
        states = (await service.pooled_by_head(body.codes, ["search"]))["search"]
        with torch.no_grad():
            vectors = encoder.model.heads["search"](states).float().numpy()
        return {"embeddings": np.round(vectors, 6).tolist()}

    @app.post("/v1/search", summary="the functions of the index that best answer a query")
    async def search(body: SearchRequest) -> dict[str, Any]:
        service.require("search")
        if service.index is None:
            raise HTTPException(409, "no index loaded: start the server with --index DIR (built by 'mtpeft index')")
        if body.k > service.limits.max_k:
            raise HTTPException(422, f"k: at most {service.limits.max_k}")
        states = await service.batcher.pooled([body.query], encoder.query_encoding())
        with torch.no_grad():
            query = encoder.model.heads["search"](states).float().numpy()
        loop = asyncio.get_running_loop()  # the matrix product over the index stays off the event loop
        results = await loop.run_in_executor(None, service.index.search, query, body.k, service.limits.prescore)
        languages = service.languages["search"]
        return {"results": [r | {"in_domain": r.get("language") in languages} for r in results[0]],
                "trained_languages": languages}

    return app


def serve(encoder: SharedEncoder, index: CodeIndex | None, host: str, port: int, limits: Limits) -> None:
    import uvicorn

    uvicorn.run(create_app(encoder, index, limits), host=host, port=port, log_level="info")
