"""The outbox: messages written in the transaction of the change that causes them,
delivered afterwards by any worker, retried with backoff until they get through.

A message is claimed by pushing its next attempt time forward (a lease) in a short
transaction, then sent outside it; so a worker that dies mid-send only delays it.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.clock import Clock
from vidpipe.ids import new_id
from vidpipe.notify import signing, webhooks
from vidpipe.notify.channels import AlertChannel, shape
from vidpipe.store.db import Database
from vidpipe.store.schema import outbox

log = logging.getLogger("vidpipe.outbox")

SEND_LEASE_S = 60.0
SEND_TIMEOUT_S = 30.0
# About a day of retries (23.7 h), then the message is given up (kept, with its error).
RETRY_DELAYS_S = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800)
_INSERT = insert(outbox)  # built once: compiled once (see store/jobs.py)


async def enqueue(
    conn: AsyncConnection,
    *,
    kind: str,
    target: str,
    payload: dict[str, Any],
    now: float,
    tenant_id: str | None = None,
    endpoint_id: str | None = None,
    job_id: str | None = None,
    event_type: str | None = None,
) -> str:
    msg_id = new_id("dlv")
    await conn.execute(
        _INSERT,
        {
            "id": msg_id,
            "kind": kind,
            "target": target,
            "payload": payload,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "tenant_id": tenant_id,
            "endpoint_id": endpoint_id,
            "job_id": job_id,
            "event_type": event_type,
        },
    )
    return msg_id


async def enqueue_alert(
    conn: AsyncConnection,
    channels: Sequence[AlertChannel],
    *,
    title: str,
    text: str,
    data: dict[str, Any],
    now: float,
) -> None:
    for channel in channels:
        await enqueue(
            conn,
            kind="alert",
            target=channel.url,
            payload=shape(channel, title, text, data),
            now=now,
        )


_DUE: Any = (outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= bindparam("_now"))
# Whether anything is due: asked once a second by every worker, usually to hear "no".
_ANY_DUE = select(outbox.c.id).where(*_DUE).limit(1)


async def dispatch_due(
    db: Database, http: httpx.AsyncClient, clock: Clock, *, limit: int = 20
) -> int:
    """Send the messages that are due; returns how many were delivered."""
    now = clock.now()
    # A read first (the ix_outbox_due index): the usual empty answer costs no write
    # transaction, which on SQLite would queue behind, and hold up, every writer.
    async with db.point_read() as conn:
        if (await conn.execute(_ANY_DUE, {"_now": now})).first() is None:
            return 0
    async with db.write() as conn:
        query = (
            select(outbox)
            .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at)
            .limit(limit)
        )
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        due = [dict(r) for r in (await conn.execute(query)).mappings()]
        if not due:
            return 0
        await conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([row["id"] for row in due]))
            .values(next_attempt_at=now + SEND_LEASE_S)
        )
    delivered = 0
    for msg in due:
        try:
            status, error = await _deliver(db, http, clock, msg)
        except Exception as exc:  # one bad message must not hold up the others
            status, error = None, f"{type(exc).__name__}: {exc}"
        now = clock.now()
        attempts = int(msg["attempts"]) + 1
        async with db.write() as conn:
            if error is None:
                delivered += 1
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id == msg["id"])
                    .values(
                        delivered_at=now, attempts=attempts, last_error=None, last_status=status
                    )
                )
                continue
            given_up = attempts > len(RETRY_DELAYS_S) or status == 410
            delay = RETRY_DELAYS_S[min(attempts, len(RETRY_DELAYS_S)) - 1]
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == msg["id"])
                .values(
                    attempts=attempts,
                    last_error=error,
                    last_status=status,
                    # Jittered, so a receiver that was down is not hit by everything
                    # at once; given up: parked far ahead, visible with its error.
                    next_attempt_at=now
                    + (10**9 if given_up else delay * (1 + 0.1 * random.random())),
                )
            )
            if status == 410 and msg["endpoint_id"]:
                await webhooks.set_disabled(
                    conn, msg["endpoint_id"], "the endpoint answered 410 Gone", now
                )
        log.warning("outbox message %s to %s failed: %s", msg["id"], msg["target"], error)
    return delivered


async def _deliver(
    db: Database, http: httpx.AsyncClient, clock: Clock, msg: dict[str, Any]
) -> tuple[int | None, str | None]:
    """(HTTP status, error or None). Webhooks are signed now, with a fresh timestamp."""
    headers: dict[str, str] = {"content-type": "application/json"}
    if msg["kind"] == "webhook":
        payload = msg["payload"]
        body = json.dumps(payload["body"], separators=(",", ":"), sort_keys=True).encode()
        async with db.point_read() as conn:
            keys = await webhooks.signing_secrets(
                conn, msg["tenant_id"], msg["endpoint_id"], clock.now()
            )
        if not keys:
            return None, "no signing secret (endpoint deleted?)"
        headers = signing.headers(keys, payload["webhook_id"], int(clock.now()), body)
    else:
        body = json.dumps(msg["payload"]).encode()
    try:
        response = await http.post(
            msg["target"], content=body, headers=headers, timeout=SEND_TIMEOUT_S
        )
    except Exception as exc:  # network errors, the URL guard refusing the target
        return None, f"{type(exc).__name__}: {exc}"
    if response.status_code >= 300:
        return response.status_code, f"HTTP {response.status_code}"
    return response.status_code, None
