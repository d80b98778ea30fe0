"""Micro-batching: concurrent requests share one backbone pass.

Requests put their texts on a queue. A single worker takes the first waiting request, gathers more
for up to ``wait_s`` (or until ``max_texts`` texts), and encodes them all in one call to the
encoder, on one dedicated model thread, so the event loop stays free and the model never runs two
passes at once. Under load the requests that arrive during a pass form the next batch.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch


@dataclass
class Pending:
    texts: list[str]
    key: Any  # requests with the same key (the encoding) can share a pass
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, encode: Callable[[Sequence[str], Any], torch.Tensor], max_texts: int = 256, wait_s: float = 0.002) -> None:
        self.encode = encode
        self.max_texts = max_texts
        self.wait_s = wait_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtpeft-model")
        self.queue: asyncio.Queue[Pending] | None = None
        self.worker: asyncio.Task | None = None
        self.passes = 0  # encoder calls (backbone passes over a gathered batch)
        self.requests = 0  # requests served through those passes

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run other model work (a joint clone pass) on the model thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def pooled(self, texts: Sequence[str], key: Any) -> torch.Tensor:
        if self.queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(list(texts), key, future))
        return await future

    async def gather(self, first: Pending) -> list[Pending]:
        """The first request and those arriving within the wait window, up to max_texts texts."""
        assert self.queue is not None
        items, count = [first], len(first.texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while count < self.max_texts:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            items.append(item)
            count += len(item.texts)
        return items

    async def run(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = await self.gather(await self.queue.get())
            groups: dict[Any, list[Pending]] = {}
            for item in items:
                groups.setdefault(item.key, []).append(item)
            for key, group in groups.items():
                texts = [t for item in group for t in item.texts]
                try:
                    states = await loop.run_in_executor(self.executor, self.encode, texts, key)
                except Exception as error:  # the requests get the error; the server keeps serving
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(error)
                    continue
                self.passes += 1
                self.requests += len(group)
                start = 0
                for item in group:
                    if not item.future.done():  # a client that went away has cancelled its future
                        item.future.set_result(states[start : start + len(item.texts)])
                    start += len(item.texts)
