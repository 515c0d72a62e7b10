"""Money end to end on SQLite and PostgreSQL: admission under concurrency, reservations,
settlement, credits, limits, alerts and reports, through the real API and workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.money.reports import ledger_totals
from vidpipe.notify import alerts, outbox
from vidpipe.notify.channels import AlertChannel
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import budget_usage, jobs
from vidpipe.store.schema import outbox as outbox_table

pytestmark = pytest.mark.timeout(120)

ONE_DOLLAR = 1_000_000


@dataclass
class Bank:
    runtime: Runtime
    client: httpx.AsyncClient
    admin: dict[str, str]
    user: dict[str, str]
    tenant_id: str

    async def create(self, **body: object) -> httpx.Response:
        body = {"prompt": "p", "seconds": 1, "size": "640x360", "model": "instant/test", **body}
        return await self.client.post("/v1/videos", json=body, headers=self.user)

    async def usage_row(self) -> tuple[int, int]:
        async with self.runtime.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(budget_usage.c.reserved_micros), 0),
                        func.coalesce(func.sum(budget_usage.c.spent_micros), 0),
                    ).where(budget_usage.c.scope == "global", budget_usage.c.period == "day")
                )
            ).first()
        assert row is not None
        return int(row[0]), int(row[1])

    async def finish_all(self, workers: int = 2, timeout_s: float = 60) -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.runtime.new_worker().run(stop)) for _ in range(workers)]
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    async with self.runtime.db.read() as conn:
                        open_jobs = await conn.scalar(
                            select(func.count())
                            .select_from(jobs)
                            .where(jobs.c.status.in_(("queued", "in_progress")))
                        )
                    if not open_jobs:
                        return
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            self.runtime.workers.clear()


@pytest.fixture
async def bank(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Bank]:
    settings = make_settings(
        db_url,
        instant_provider=True,
        idle_poll_s=0.1,
        prices={"instant/test": {"unit": "second", "usd": 1.0}},
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    now = runtime.clock.now()
    async with runtime.db.write() as conn:
        ops = await tenant_q.create_tenant(conn, "ops", now)
        acme = await tenant_q.create_tenant(conn, "acme", now)
        _, admin = await tenant_q.create_api_key(conn, ops.id, scope="admin", name=None, now=now)
        _, user = await tenant_q.create_api_key(conn, acme.id, scope="user", name=None, now=now)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://vidpipe.test"
    )
    yield Bank(
        runtime,
        client,
        {"Authorization": f"Bearer {admin}"},
        {"Authorization": f"Bearer {user}"},
        acme.id,
    )
    await client.aclose()
    await runtime.close()


async def _set_budget(bank: Bank, scope: str, usd: float | None, period: str = "day") -> None:
    response = await bank.client.put(
        "/v1/budgets",
        json={"scope": scope, "period": period, "limit_usd": usd},
        headers=bank.admin,
    )
    assert response.status_code == 200, response.text


async def test_fifty_concurrent_requests_against_room_for_ten(bank: Bank) -> None:
    await _set_budget(bank, "global", 10.0)
    samples: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def watch() -> None:  # the ceiling must hold at every instant, not just the end
        while not done.is_set():
            samples.append(await bank.usage_row())
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    responses = await asyncio.gather(*[bank.create(prompt=f"p{i}") for i in range(50)])
    codes = [r.status_code for r in responses]
    assert codes.count(202) == 10
    assert codes.count(402) == 40
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {
        "budget_exceeded"
    }
    async with bank.runtime.db.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(jobs)) == 10
    assert await bank.usage_row() == (10 * ONE_DOLLAR, 0)
    admitted = [r.json() for r in responses if r.status_code == 202]
    assert {v["cost"]["estimated"] for v in admitted} == {1.0}
    assert {v["cost"]["reserved"] for v in admitted} == {1.0}

    await bank.finish_all(workers=2)
    done.set()
    await watcher
    assert all(reserved + spent <= 10 * ONE_DOLLAR for reserved, spent in samples)
    assert await bank.usage_row() == (0, 10 * ONE_DOLLAR)
    async with bank.runtime.db.read() as conn:
        totals = await ledger_totals(conn)
    assert totals["reserve"] == totals["settle"] + totals["release"]
    assert totals["settle"] == 10 * ONE_DOLLAR
    listed = (await bank.client.get("/v1/videos?limit=100", headers=bank.user)).json()["data"]
    assert {(v["status"], v["cost"]["actual"], v["cost"]["reserved"]) for v in listed} == {
        ("completed", 1.0, 0.0)
    }
    # The budget is spent: the next request is refused, and says which budget.
    refused = await bank.create()
    assert refused.status_code == 402
    assert "global" in refused.json()["error"]["message"]
    budgets = (await bank.client.get("/v1/budgets", headers=bank.admin)).json()["data"]
    assert budgets[0]["remaining_usd"] == 0.0
    assert budgets[0]["used_percent"] == 100.0


async def test_dry_run_estimates_and_creates_nothing(bank: Bank) -> None:
    response = await bank.client.post(
        "/v1/videos?dry_run=true",
        json={"prompt": "p", "seconds": 3, "size": "640x360", "model": "instant/test"},
        headers=bank.user,
    )
    assert response.status_code == 200
    estimate = response.json()
    assert estimate["object"] == "video.estimate"
    assert estimate["cost"]["estimated"] == 3.0
    assert estimate["cost"]["ceiling"] == 3.0 * (1 + 1 + 3)
    assert estimate["plan"] == [{"step": "clip", "kind": "clip", "model": "instant/test"}]
    async with bank.runtime.db.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(jobs)) == 0
        totals = await ledger_totals(conn)
    assert totals == {}


async def test_per_video_maximum_and_tenant_limits(bank: Bank) -> None:
    over = await bank.create(max_cost_usd=0.5)
    assert over.status_code == 402
    assert over.json()["error"]["code"] == "budget_exceeded"
    patched = await bank.client.patch(
        "/v1/tenants/acme",
        json={"limits": {"max_seconds": 2, "jobs_per_day": 2, "concurrent_jobs": 5}},
        headers=bank.admin,
    )
    assert patched.status_code == 200
    too_long = await bank.create(seconds=3)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "limit_exceeded"
    assert (await bank.create()).status_code == 202
    assert (await bank.create()).status_code == 202
    third = await bank.create()
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "usage_limit_reached"
    forbidden = await bank.client.patch("/v1/tenants/acme", json={"limits": {}}, headers=bank.user)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "admin_required"


async def test_credits_are_taken_and_given_back(bank: Bank) -> None:
    await bank.client.patch(
        "/v1/tenants/acme", json={"billing_mode": "credits"}, headers=bank.admin
    )
    topped = await bank.client.post(
        "/v1/tenants/acme/credits",
        json={"amount_usd": 2.0, "note": "prepaid"},
        headers=bank.admin,
    )
    assert topped.json()["balance_usd"] == 2.0
    assert (await bank.create()).status_code == 202
    assert (await bank.create()).status_code == 202
    broke = await bank.create()
    assert broke.status_code == 402
    assert broke.json()["error"]["code"] == "insufficient_credits"
    view = (await bank.client.get("/v1/budgets", headers=bank.user)).json()
    assert view["credits_usd"] == 0.0
    # A canceled video gives its money back at once.
    first = (await bank.client.get("/v1/videos", headers=bank.user)).json()["data"][0]
    await bank.client.post(f"/v1/videos/{first['id']}/cancel", headers=bank.user)
    view = (await bank.client.get("/v1/budgets", headers=bank.user)).json()
    assert view["credits_usd"] == 1.0
    await bank.finish_all()
    view = (await bank.client.get("/v1/budgets", headers=bank.user)).json()
    assert view["credits_usd"] == 1.0  # the other one was made and paid for
    overdraw = await bank.client.post(
        "/v1/tenants/acme/credits",
        json={"amount_usd": -5.0, "note": "oops"},
        headers=bank.admin,
    )
    assert overdraw.status_code == 402


async def test_unpriced_models_are_refused(bank: Bank) -> None:
    response = await bank.client.put(
        "/v1/prices/instant/test", json={"unit": "character", "usd": 0.01}, headers=bank.admin
    )
    assert response.status_code == 200
    unusable = await bank.create()
    assert unusable.status_code == 422
    assert unusable.json()["error"]["code"] == "price_unusable"
    fixed = await bank.client.put(
        "/v1/prices/instant/test", json={"unit": "second", "usd": 0.25}, headers=bank.admin
    )
    assert fixed.status_code == 200
    created = await bank.create(seconds=2)
    assert created.json()["cost"]["estimated"] == 0.5
    prices = (await bank.client.get("/v1/prices", headers=bank.user)).json()["data"]
    assert {"model": "instant/test", "usd": 0.25}.items() <= next(
        p for p in prices if p["model"] == "instant/test"
    ).items()
    unknown = await bank.client.put(
        "/v1/prices/nobody/nothing", json={"usd": 1}, headers=bank.admin
    )
    assert unknown.status_code == 422


async def test_budget_alerts_go_out_once_per_threshold(bank: Bank) -> None:
    received: list[dict[str, object]] = []

    async def receiver(scope, receive, send):  # type: ignore[no-untyped-def]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(json.loads(body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    bank.runtime.settings.alert_channels = [
        AlertChannel(kind="webhook", url="http://alerts.test/hook")
    ]
    await _set_budget(bank, "global", 5.0)
    for _ in range(5):
        assert (await bank.create()).status_code == 202
    alerts_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver))
    async with alerts_http:
        sent = await outbox.dispatch_due(bank.runtime.db, alerts_http, bank.runtime.clock)
        assert sent == 2
        assert await outbox.dispatch_due(bank.runtime.db, alerts_http, bank.runtime.clock) == 0
    thresholds = sorted(a["data"]["threshold"] for a in received)  # type: ignore[index]
    assert thresholds == [80, 100]
    assert all(a["type"] == "vidpipe.alert" for a in received)


async def test_usage_report_groups(bank: Bank) -> None:
    for _ in range(3):
        assert (await bank.create()).status_code == 202
    await bank.finish_all()
    report = (await bank.client.get("/v1/usage?group_by=provider,model", headers=bank.user)).json()
    assert report["data"] == [
        {
            "provider": "instant",
            "model": "test",
            "spend_usd": 3.0,
            "jobs": 3,
            "attempts": 3,
            "seconds": 3,
            "failures": 0,
            "failure_cost_usd": 0.0,
        }
    ]
    bad = await bank.client.get("/v1/usage?group_by=color", headers=bank.user)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_group_by"


async def test_weekly_report_goes_out_once_a_week(bank: Bank) -> None:
    channels = [AlertChannel(kind="slack", url="http://alerts.test/slack")]
    for _ in range(2):
        assert (await bank.create()).status_code == 202
    await bank.finish_all()
    next_week = bank.runtime.clock.now() + 7 * 86400
    async with bank.runtime.db.write() as conn:
        assert await alerts.weekly_report(bank.runtime.db, conn, channels, next_week)
        assert not await alerts.weekly_report(bank.runtime.db, conn, channels, next_week + 60)
    async with bank.runtime.db.read() as conn:
        payloads = [r[0] for r in await conn.execute(select(outbox_table.c.payload))]
    assert len(payloads) == 1
    assert payloads[0]["text"].startswith("*vidpipe weekly spend*\nLast week: $2.00")
