"""A bounded load test of ``mtpeft serve`` on 127.0.0.1: a fixed number of concurrent clients, each
sending a fixed number of requests, then it stops (and stops the server).

Requests: ``/v1/analyze`` with one real function (every head from one pass; distinct functions so
the embedding cache never answers) and, every ``--search-every``-th request, ``/v1/search`` with a
real query over an index. Reports requests/s, p50/p95/p99 latency per endpoint and overall,
errors, and how many requests shared each backbone pass (from /health).

    nice -n 10 python benchmarks/serve_load.py --data ../../shared/data --run runs/demo --index runs/bench-index
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, percentiles, real_functions, real_queries, write_outputs  # noqa: E402

LANGUAGE = {"c": "c", "java": "java", "python": "python", "ruby": "ruby"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mtpeft", "serve", "--run", str(args.run), "--port", str(port),
               "--threads", str(args.server_threads), "--batch-wait-ms", str(args.batch_wait_ms)]
    if args.index:
        command += ["--index", str(args.index)]
    log = open(args.server_log, "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


async def wait_ready(client: httpx.AsyncClient, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; see its log")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("the server did not become ready")


async def client_loop(client: httpx.AsyncClient, jobs: list[tuple[str, dict]], records: list) -> None:
    for path, body in jobs:
        start = time.perf_counter()
        try:
            response = await client.post(path, json=body)
            ok = response.status_code == 200
            status = response.status_code
        except httpx.HTTPError as error:
            ok, status = False, type(error).__name__
        records.append((path, time.perf_counter() - start, ok, status))


async def run(args: argparse.Namespace) -> dict:
    total = args.clients * args.requests_per_client
    functions = real_functions(args.data, total + 50, seed=1, per_source=True)
    queries = real_queries(args.data, total, seed=1)
    jobs = []
    for n in range(total):
        if args.index and n % args.search_every == args.search_every - 1:
            jobs.append(("/v1/search", {"query": queries[n % len(queries)], "k": 10}))
        else:
            code, language, _ = functions[n]
            jobs.append(("/v1/analyze", {"functions": [{"code": code, "language": LANGUAGE[language],
                                                          "is_test": "@Test" in code}]}))
    port = free_port()
    server = start_server(args, port)
    records: list = []
    try:
        limits = httpx.Limits(max_connections=args.clients + 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.request_timeout, limits=limits) as client:
            await wait_ready(client, server, 300)
            # warm-up outside the measurement: a few requests of each kind
            warm = functions[total : total + 5]
            for code, language, _ in warm:
                await client.post("/v1/analyze", json={"functions": [{"code": code, "language": language}]})
            before = (await client.get("/health")).json()
            started = time.perf_counter()
            shares = [jobs[i :: args.clients] for i in range(args.clients)]
            await asyncio.wait_for(asyncio.gather(*(client_loop(client, share, records) for share in shares)), args.max_seconds)
            elapsed = time.perf_counter() - started
            after = (await client.get("/health")).json()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    errors = [r for r in records if not r[2]]
    by_path = {}
    for path in sorted({r[0] for r in records}):
        by_path[path] = percentiles([r[1] for r in records if r[0] == path])
    passes = after["passes"] - before["passes"]
    batched = after["batched_requests"] - before["batched_requests"]
    return {
        "command": command_line(), "run": str(args.run), "index": str(args.index) if args.index else None,
        "index_functions": after.get("index_functions"), "clients": args.clients,
        "requests": len(records), "seconds": round(elapsed, 2), "requests_per_s": round(len(records) / elapsed, 2),
        "latency_all": percentiles([r[1] for r in records]), "latency_by_endpoint": by_path,
        "errors": len(errors), "error_statuses": sorted({str(r[3]) for r in errors}),
        "backbone_passes": passes, "requests_per_pass": round(batched / passes, 2) if passes else None,
        "server_threads": args.server_threads, "batch_wait_ms": args.batch_wait_ms, "machine": machine(),
    }


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Load test of `mtpeft serve` (127.0.0.1)",
        "",
        f"Command (from the repository root): `{r['command']}`",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared with other jobs; load average at start {m['load_average_at_start']}), "
        f"CPU flags {', '.join(m['cpu_flags'])}; torch {m['torch']}. Server: run {r['run']}, {r['server_threads']} torch thread(s), "
        f"micro-batching window {r['batch_wait_ms']} ms, index of {r['index_functions']} functions. Clients and server share the machine.",
        "",
        f"{r['clients']} concurrent clients, {r['requests']} requests in {r['seconds']} s: **{r['requests_per_s']} requests/s**, "
        f"**{r['errors']} errors**{' ' + str(r['error_statuses']) if r['errors'] else ''}. "
        f"{r['backbone_passes']} backbone passes, {r['requests_per_pass']} requests per pass on average (micro-batching).",
        "",
        "| endpoint | requests | p50 (ms) | p95 (ms) | p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    for path, p in list(r["latency_by_endpoint"].items()) + [("all", r["latency_all"])]:
        lines.append(f"| {path} | {p['n']} | {p['p50_ms']} | {p['p95_ms']} | {p['p99_ms']} |")
    lines += ["", "`/v1/analyze`: one real function per request (Devign, BigCloneBench, CoSQA, FlakeFlagger, CodeSearchNet), "
                  "all heads; `/v1/search`: one real query (CoSQA, CodeSearchNet), top 10."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=40)
    parser.add_argument("--search-every", type=int, default=4)
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="hard stop of the whole test")
    parser.add_argument("--server-log", type=Path, default=Path("runs/serve_load.log"))
    parser.add_argument("--out", type=Path, default=Path("results/inference"))
    args = parser.parse_args()
    args.server_log.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    print(result)
    write_outputs(args.out, "serve_load", result, markdown(result))


if __name__ == "__main__":
    main()
