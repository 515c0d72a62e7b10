"""The vidpipe command as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import VIDPIPE, free_port, run_vidpipe, vidpipe_env, wait_http
from vidpipe.media.probe import probe

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_generate_writes_a_real_mp4(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    out = tmp_path / "out" / "clip.mp4"
    result = run_vidpipe(
        "generate",
        "a paper boat on a calm lake",
        "--seconds",
        "2",
        "--size",
        "360x640",
        "-o",
        str(out),
        env=env,
    )
    assert result.stdout.strip().splitlines()[-1] == str(out)
    info = probe(out)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (360, 640)
    assert abs(info.duration_s - 2.0) <= 0.2
    assert info.video.codec == "h264"
    lines = run_vidpipe("jobs", "list", "--json", env=env).stdout.splitlines()
    jobs = [json.loads(line) for line in lines]
    assert [(j["status"], j["progress"], j["size"]) for j in jobs] == [
        ("completed", 100, "360x640")
    ]


def test_generate_fails_with_the_reason(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    result = run_vidpipe(
        "generate", "x", "--size", "123x45", "-o", str(tmp_path / "o.mp4"), env=env, check=False
    )
    assert result.returncode == 1
    assert "unsupported_size" in result.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    result = run_vidpipe("keys", "create", "--tenant", "acme", env=env)
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("vp_")
    assert " " not in key
    listed = run_vidpipe("keys", "list", "--tenant", "acme", env=env).stdout
    assert key.split("_")[1] in listed  # the prefix is shown
    assert key not in listed  # the secret is not


def test_doctor_gives_a_verdict_per_part(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    before = run_vidpipe("doctor", env=env, check=False)
    assert before.returncode == 1  # no database yet
    assert "FAIL database" in " ".join(before.stdout.split())
    run_vidpipe("migrate", env=env)
    after = run_vidpipe("doctor", env=env)
    for part in ("ffmpeg", "database", "storage", "shorts"):
        assert f"ok {part}" in " ".join(after.stdout.split())


def test_serve_refuses_auth_off_on_a_public_bind(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home", VIDPIPE_AUTH_DISABLED="true")
    result = run_vidpipe("serve", "--host", "0.0.0.0", env=env, check=False, timeout=30)
    assert result.returncode != 0
    assert "unsafe_config" in result.stderr


def test_serve_makes_a_video_over_http_with_a_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = vidpipe_env(home)
    key = run_vidpipe("keys", "create", "--tenant", "acme", env=env).stdout.split()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [*VIDPIPE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{base}/v1/videos").status_code == 401
        created = httpx.post(
            f"{base}/v1/videos",
            headers=headers,
            json={"prompt": "city lights", "seconds": 1, "size": "640x360"},
        )
        assert created.status_code == 202
        vid = created.json()["id"]
        import time

        deadline = time.monotonic() + 60
        video = created.json()
        while video["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.2)
            video = httpx.get(f"{base}/v1/videos/{vid}", headers=headers).json()
        assert video["status"] == "completed", video
        content = httpx.get(f"{base}/v1/videos/{vid}/content", headers=headers)
        assert content.status_code == 200
        (tmp_path / "v.mp4").write_bytes(content.content)
        info = probe(tmp_path / "v.mp4")
        assert info.video is not None
        assert (info.video.width, info.video.height) == (640, 360)
        remote = run_vidpipe(
            "generate",
            "remote run",
            "--seconds",
            "1",
            "--size",
            "640x360",
            "-o",
            str(tmp_path / "r.mp4"),
            "--api-url",
            base,
            "--api-key",
            key,
            env=env,
        )
        assert remote.returncode == 0
        assert probe(tmp_path / "r.mp4").duration_s > 0.5
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output


def test_worker_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    result = run_vidpipe("worker", env=env, check=False, timeout=30)
    assert result.returncode == 1
    assert "schema_outdated" in result.stderr
    assert "vidpipe migrate" in result.stderr


def test_budget_and_cost_commands(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    run_vidpipe(
        "generate",
        "x",
        "--seconds",
        "1",
        "--size",
        "640x360",
        "-o",
        str(tmp_path / "x.mp4"),
        env=env,
    )
    run_vidpipe("budgets", "set", "--scope", "global", "--period", "day", "--usd", "12.5", env=env)
    listed = run_vidpipe("budgets", "list", env=env).stdout
    assert "$12.50" in listed
    report = run_vidpipe("costs", "report", "--period", "week", "--csv", env=env).stdout
    lines = report.strip().splitlines()
    assert lines[0] == "day,provider,spend_usd,jobs,attempts,seconds,failures,failure_cost_usd"
    assert lines[1].endswith(",local,0.0,1,1,1,0,0.0")
    bad = run_vidpipe(
        "credits", "add", "--tenant", "nobody", "--usd", "1", "--note", "x", env=env, check=False
    )
    assert bad.returncode == 1


def test_batch_command_makes_every_video_and_reports(tmp_path: Path) -> None:
    env = vidpipe_env(tmp_path / "home")
    lines = [json.dumps({"prompt": f"b{i}", "seconds": 1, "size": "640x360"}) for i in range(3)]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    result = run_vidpipe(
        "batch", str(tmp_path / "b.jsonl"), "--report", str(tmp_path / "r.csv"), env=env
    )
    assert "completed" in result.stderr
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert len(rows) == 4
    assert all(",completed," in row for row in rows[1:])
