"""Dynamic batching for the service: concurrent requests are decoded together in one `ReportGenerator.decode`.

A request's prepared study waits in a bounded asyncio queue; one loop takes the first waiting study, gathers more
for up to `max_wait_s` (or until `max_batch`; 1 ms at most when the last batch held one study), and decodes the batch on one worker thread (the model is not
thread-safe; torch releases the GIL, so the event loop keeps accepting requests). A full queue refuses at once
(`QueueFull`, which the service answers with 429): under overload, clients are told to retry instead of waiting
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds `max_queue` studies already."""


@dataclass
class _Item:
    images: torch.Tensor  # (V, C, S, S)
    view_mask: torch.Tensor  # (V,)
    evidence: bool | str
    future: asyncio.Future
    expert_probs: dict[str, float] | None = None  # a what-if: some experts' p, merged into the model's own


class Batcher:
    """`await batcher.submit(images, view_mask, evidence)` -> a ReportResult; `start()` / `stop()` in the
    service's lifespan. `decode(images (B, V, C, S, S), view_mask (B, V), evidence) -> results` runs on the
    worker thread; when a study of the batch carries a what-if (`submit(..., expert_probs={name: p})`), it is
    called with a fourth argument, the B what-ifs (None for a study without one)."""

    def __init__(self, decode, max_batch: int = 16, max_wait_s: float = 0.005, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be positive, max_wait_s non-negative")
        self.decode = decode
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.queue: asyncio.Queue[_Item] | None = None
        self.task: asyncio.Task | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.batches = 0  # decoded batches (for /v1/model and tests)
        self.studies = 0
        self.last_batch = 0  # studies in the last decoded batch

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadrrg-decode")
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    async def submit(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        evidence: bool | str = False,
        expert_probs: dict[str, float] | None = None,
    ):
        if self.queue is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Item(images, view_mask, evidence, future, expert_probs))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} studies are waiting already") from None
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            # Wait for company only under concurrency (the last batch held more than one study): a lone client
            # pays no wait, and under load the clients answered by the last batch can join this one instead of
            # forming a second, half-full group that alternates with the first.
            wait = self.max_wait_s if self.last_batch > 1 else min(self.max_wait_s, 0.001)
            deadline = loop.time() + wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = [item for item in batch if not item.future.cancelled()]  # the client went away
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as exc:  # a failed batch fails its requests, not the loop
                logger.exception("decoding a batch of %d studies failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)

    def _run(self, batch: list[_Item]) -> list:
        modes = {item.evidence for item in batch}
        evidence = "full" if "full" in modes else bool(any(modes))
        images = torch.stack([item.images for item in batch])  # (B, V, C, S, S)
        view_mask = torch.stack([item.view_mask for item in batch])  # (B, V)
        what_ifs = [item.expert_probs for item in batch]
        if any(what_if is not None for what_if in what_ifs):
            results = self.decode(images, view_mask, evidence, what_ifs)
        else:
            results = self.decode(images, view_mask, evidence)
        for item, result in zip(
            batch, results
        ):  # evidence only for those who asked, at the detail they asked
            if not item.evidence:
                result.evidence = None
            elif item.evidence is True and result.evidence is not None:
                result.evidence.pop("full", None)
        self.batches += 1
        self.studies += len(batch)
        self.last_batch = len(batch)
        return results
