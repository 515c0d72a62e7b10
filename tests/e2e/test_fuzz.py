"""Schemathesis against vidpipe's own OpenAPI, with a real server.

A real ``vidpipe serve`` (SQLite, the instant provider, an embedded worker) on loopback,
an admin key in the Authorization header, and some real data first (completed videos,
videos held for review, a second tenant, spare keys, webhook endpoints with deliveries, a
batch) whose ids are offered to the fuzzer as dictionaries next to the values it
generates: otherwise almost every ``/{id}`` operation stops at a 404. Then every
operation of ``/openapi.json`` is fuzzed (positive and negative data; coverage, fuzzing
and stateful phases) with two checks: no 5xx (``not_a_server_error``) and every
documented response matches its schema (``response_schema_conformance``).

Bounded for the suite: a few examples per operation and a fixed seed. A longer run is
the same test with knobs (all optional):

    FUZZ_MAX_EXAMPLES=50 FUZZ_SEED=7 FUZZ_TIMEOUT_S=1800 \
        FUZZ_REPORT_DIR=bench/out/fuzz pytest -rP tests/e2e/test_fuzz.py

``FUZZ_STREAMS=1`` adds the two Server-Sent-Events operations. Each of their cases holds
a stream open until two events arrive or it times out (up to half a minute when nothing
happens), so they are left out by default; with streams, allow about a minute per
example.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import VIDPIPE, free_port, run_vidpipe, vidpipe_env, wait_http

pytest.importorskip("schemathesis")

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "3"))
SEED = int(os.environ.get("FUZZ_SEED", "20261121"))
STREAMS = os.environ.get("FUZZ_STREAMS", "") == "1"
REPORT_DIR = os.environ.get("FUZZ_REPORT_DIR")
RUN_TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT_S", "240"))

pytestmark = [pytest.mark.timeout(RUN_TIMEOUT_S + 120), pytest.mark.slow]
VIDEO = {"seconds": 1, "size": "640x360", "model": "instant/test"}


def _toml(value: object) -> str:
    """A TOML value for strings and lists of strings (JSON's escapes are TOML's)."""
    return json.dumps(value)


def _seed_data(client: httpx.Client, dead_hook: str) -> dict[str, list[str]]:
    """Real resources of every kind the operations name, their ids by dictionary.

    Operations that destroy (DELETE a video, an endpoint, a key) get ids of their own,
    so the others still find theirs alive later in the run.
    """

    def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, (response.request.url, response.text)
        return response.json()

    def endpoint() -> str:
        return str(ok(client.post("/v1/webhook-endpoints", json={"url": dead_hook}))["id"])

    def video(prompt: str, **extra: object) -> str:
        return str(ok(client.post("/v1/videos", json={"prompt": prompt, **VIDEO, **extra}))["id"])

    endpoints = [endpoint() for _ in range(2)]
    doomed_endpoints = [endpoint() for _ in range(2)]
    ok(client.post("/v1/tenants", json={"name": "other"}))
    spare_keys = [
        str(ok(client.post("/v1/tenants/other/keys", json={"scope": "user"}))["id"])
        for _ in range(3)
    ]
    videos = [video(f"fuzz seed {i}") for i in range(4)]
    held = [video(f"fuzz held {i}", review=True) for i in range(2)]
    doomed_videos = [video(f"fuzz doomed {i}") for i in range(3)]
    batch = ok(client.post("/v1/batches", json={"requests": [{"prompt": "batch", **VIDEO}]}))

    def settled(video_id: str) -> bool:
        found = ok(client.get(f"/v1/videos/{video_id}"))
        review = found.get("review") or {}
        return found["status"] == "completed" or review.get("state") == "pending"

    deadline = time.monotonic() + 90
    while not all(settled(v) for v in [*videos, *held, *doomed_videos]):
        assert time.monotonic() < deadline, "the seed videos did not complete"
        time.sleep(0.2)
    deliveries = ok(client.get(f"/v1/webhook-endpoints/{endpoints[0]}/deliveries"))
    delivery_ids = [str(d["id"]) for d in deliveries.get("data", [])][:5]
    tenants = ok(client.get("/v1/tenants"))
    return {
        "video_id": [*videos, *held],
        "doomed_video_id": doomed_videos,
        "endpoint_id": endpoints,
        "doomed_endpoint_id": doomed_endpoints,
        "delivery_id": delivery_ids or ["dlv_none"],
        "batch_id": [str(batch["id"])],
        "key_id": spare_keys,  # never the fuzzer's own key
        "tenant": ["fuzz", "other", *(str(t["id"]) for t in tenants.get("data", []))],
        "model": ["instant/test", "local/procedural", "runway/gen4_turbo"],
        "provider": ["instant", "local", "replicate", "veo", "fal", "runway", "luma"],
        "path": ["index.m3u8", "720p/index.m3u8", "720p/segment0.ts"],
        "hook_url": [dead_hook, "https://example.com/hooks"],
        "budget_scope": ["global", "fuzz", "other"],
        "video_model": ["instant/test"],
        "video_size": ["640x360", "1280x720", "720x1280"],
    }


# Path parameters and a few body fields: seeded ids and known-good values, three times
# out of four.
BINDINGS = {
    "path.video_id": "video_id",
    "path.endpoint_id": "endpoint_id",
    "path.delivery_id": "delivery_id",
    "path.batch_id": "batch_id",
    "path.key_id": "key_id",
    "path.tenant": "tenant",
    "path.model": "model",
    "path.provider": "provider",
    "path.path": "path",
    "body.url": "hook_url",
    "body.scope": "budget_scope",
    "body.model": "video_model",
    "body.size": "video_size",
}
# Destructive operations: their own ids.
DESTRUCTIVE = {
    "/v1/videos/{video_id}": ("path.video_id", "doomed_video_id"),
    "/v1/webhook-endpoints/{endpoint_id}": ("path.endpoint_id", "doomed_endpoint_id"),
}


def _config(path: Path, key: str, ids: dict[str, list[str]]) -> None:
    def binding(dictionary: str) -> str:
        return f"{{ dictionary = {_toml(dictionary)}, probability = 0.75 }}"

    lines = [
        f"headers = {{ Authorization = {_toml('Bearer ' + key)} }}",
        "max-stream-events = 2",
        "",
        "[parameters]",
        *(f"{_toml(param)} = {binding(name)}" for param, name in BINDINGS.items()),
        "",
        *(f"[dictionaries.{name}]\nvalues = {_toml(values)}\n" for name, values in ids.items()),
    ]
    for route, (param, name) in DESTRUCTIVE.items():
        lines += [
            "[[operations]]",
            # One operation by name ("METHOD path"): include-path and include-method
            # would each select operations on their own.
            f"include-name = {_toml('DELETE ' + route)}",
            f"parameters = {{ {_toml(param)} = {binding(name)} }}",
            "",
        ]
    path.write_text("\n".join(lines))


def test_every_operation_survives_fuzzing_without_5xx_or_schema_mismatch(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.skip(f"no schemathesis command next to {sys.executable}")
    home = tmp_path / "home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = vidpipe_env(
        home,
        VIDPIPE_INSTANT_PROVIDER="true",
        VIDPIPE_DEFAULT_MODEL="instant/test",
        # The fuzzer is one tenant sending as fast as it can: a 429 would hide the
        # operation behind it.
        VIDPIPE_RATE_LIMIT_PER_S="0",
        # Webhook deliveries go to a closed port on loopback: refused at once, offline.
        VIDPIPE_URL_ALLOWLIST="127.0.0.1",
        VIDPIPE_IDLE_POLL_S="0.2",
        # The embedded worker delivers every video the fuzzer creates: keep that light
        # so the API under test is not starved of CPU.
        VIDPIPE_VALIDATION_MODE="basic",
        # So that GET /v1/videos/{id}/url has URLs to sign with local storage.
        VIDPIPE_SIGNING_SECRET="fuzz-signing-secret-0123456789",
        VIDPIPE_PUBLIC_URL=base,
    )
    run_vidpipe("migrate", env=env)
    key = run_vidpipe("keys", "create", "--tenant", "fuzz", "--scope", "admin", env=env)
    admin_key = key.stdout.strip().splitlines()[-1]
    server_log = tmp_path / "serve.log"
    with server_log.open("ab") as handle:
        processes.append(
            subprocess.Popen(
                [*VIDPIPE, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        )
    wait_http(f"{base}/healthz", timeout_s=90)

    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        ids = _seed_data(client, f"http://127.0.0.1:{free_port()}/hooks")
    config = tmp_path / "schemathesis.toml"
    _config(config, admin_key, ids)

    report_dir = Path(REPORT_DIR) if REPORT_DIR else tmp_path / "report"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One thread: CPython 3.11 before 3.11.8 can raise a spurious "AST constructor
        # recursion depth mismatch" SystemError under threads (gh-106905).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit,ndjson",
        "--report-dir",
        str(report_dir),
        "--output-truncate",
        "false",
    ]
    if not STREAMS:
        command += ["--exclude-path-regex", "/events$"]
    result = subprocess.run(
        command,
        cwd=tmp_path,  # no schemathesis.toml from the repository or above is picked up
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    print(output[-4000:])  # the run's summary, shown with -rP or -s
    assert result.returncode == 0, output[-20000:]
    assert "Operations:       " in output
    assert " 0 passed" not in output.split("SUMMARY", 1)[-1]

    # The fuzzer's key still works (nothing it did locked it out half-way), and nothing
    # failed in the server without a response to show for it.
    assert httpx.get(f"{base}/v1/keys", headers=headers, timeout=10).status_code == 200
    log = server_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-10000:]
