"""``vidpipe batch FILE``: many videos from a JSONL file, with a progress bar."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vidpipe.config import Settings
from vidpipe.core import batches
from vidpipe.core.runtime import Runtime
from vidpipe.store import tenants as tenant_q

console = Console(stderr=True)


async def run_batch(
    settings: Settings, file: Path, report: Path | None, *, timeout_s: float
) -> dict[str, object]:
    items = batches.parse_jsonl(await asyncio.to_thread(file.read_text))
    runtime = await Runtime.open(settings)
    try:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, "default", runtime.clock.now())
        batch = await batches.create_batch(
            runtime.videos, tenant.id, items, idempotency_key=None, metadata={"file": file.name}
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(runtime.new_worker().run(stop))
        deadline = time.monotonic() + timeout_s
        try:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(batch.id, total=100, counts="")
                while True:
                    status = await batches.batch_status(runtime.videos, batch)
                    bar.update(task, completed=status["progress"], counts=str(status["counts"]))
                    if status["finished"] or time.monotonic() > deadline:
                        break
                    if worker.done():
                        worker.result()
                    await asyncio.sleep(0.2)
        finally:
            stop.set()
            await worker
        if report is not None:
            fmt = "jsonl" if report.suffix == ".jsonl" else "csv"
            text = await batches.batch_report(runtime.videos, batch, fmt)
            await asyncio.to_thread(report.write_text, text)
        return status
    finally:
        await runtime.close()
