"""The ``vidpipe`` command line (typer)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vidpipe import __version__
from vidpipe.config import Settings
from vidpipe.errors import VidpipeError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="vidpipe: AI video backend.")
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and cancel jobs.")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
costs_app = typer.Typer(no_args_is_help=True, help="Spend reports.")
budgets_app = typer.Typer(no_args_is_help=True, help="Daily and monthly budgets.")
credits_app = typer.Typer(no_args_is_help=True, help="Prepaid balances.")
app.add_typer(costs_app, name="costs")
app.add_typer(budgets_app, name="budgets")
app.add_typer(credits_app, name="credits")

out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _fail(exc: VidpipeError) -> typer.Exit:
    err.print(f"[red]error ({exc.code}):[/red] {exc.message}")
    return typer.Exit(1)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (VIDPIPE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (VIDPIPE_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Embedded worker loops.")] = 1,
) -> None:
    """API + UI + embedded workers on SQLite and local files: the all-in-one default."""
    from vidpipe.cli.serving import run
    from vidpipe.cli.serving import serve as _serve

    settings = _settings()
    try:
        run(
            _serve(
                settings,
                host=host or settings.host,
                port=port or settings.port,
                workers=workers,
                migrate=True,
            )
        )
    except VidpipeError as exc:
        raise _fail(exc) from None


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (VIDPIPE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (VIDPIPE_PORT).")] = None,
    processes: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Server processes on the port (VIDPIPE_API_PROCESSES)."),
    ] = None,
) -> None:
    """The API alone (scale-out shape); run `vidpipe migrate` and workers separately."""
    from vidpipe.cli.serving import run, run_api_processes
    from vidpipe.cli.serving import serve as _serve

    settings = _settings()
    count = processes or settings.api_processes
    try:
        if count > 1:
            code = run_api_processes(
                settings, host=host or settings.host, port=port or settings.port, processes=count
            )
            raise typer.Exit(code)
        run(
            _serve(
                settings,
                host=host or settings.host,
                port=port or settings.port,
                workers=0,
                migrate=False,
            )
        )
    except VidpipeError as exc:
        raise _fail(exc) from None


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Steps at once (VIDPIPE_WORKER_CONCURRENCY).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this process's metrics on VIDPIPE_HOST:PORT.")
    ] = None,
) -> None:
    """A worker process: claims and advances steps until SIGTERM, then drains."""
    from vidpipe.cli.serving import run, run_worker
    from vidpipe.obs.metrics import start_metrics_server

    settings = _settings()
    if metrics_port:
        start_metrics_server(settings.host, metrics_port)
    try:
        run(run_worker(settings, concurrency=concurrency))
    except VidpipeError as exc:
        raise _fail(exc) from None


@app.command()
def migrate() -> None:
    """Bring the database to the newest schema."""
    from vidpipe.store import migrate as migrations

    settings = _settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.resolved_database_url)
    err.print("database is at the newest schema")


@app.command()
def doctor() -> None:
    """Check ffmpeg, the database and storage; exit 1 if any is unusable."""
    from vidpipe.cli.doctor import run_checks

    verdicts = run_checks(_settings())
    for v in verdicts:
        mark = "[green]ok[/green]  " if v.ok else "[red]FAIL[/red]"
        out.print(f"{mark} {v.part:<9} {v.detail}")
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Workers alive, queue depth, in flight per provider, oldest waiting job, failures."""
    from vidpipe.cli.jobs import system_status

    settings = _settings()
    try:
        st = asyncio.run(system_status(settings))
    except VidpipeError as exc:
        raise _fail(exc) from None
    table = Table("worker", "host", "pid", "last heartbeat", "state")
    for w in st.workers:
        table.add_row(
            w.id,
            w.hostname,
            str(w.pid),
            f"{w.heartbeat_age_s:.0f} s ago",
            "[green]alive[/green]" if w.alive else "[red]stale[/red]",
        )
    out.print(table)
    out.print(f"due steps: {st.due_steps}   waiting on providers: {st.waiting_steps}")
    out.print("in flight: " + (", ".join(f"{p}={n}" for p, n in st.in_flight.items()) or "none"))
    out.print(
        "jobs: " + (", ".join(f"{s}={n}" for s, n in sorted(st.jobs_by_status.items())) or "none")
    )
    if st.oldest_queued_age_s is not None:
        out.print(f"oldest queued job: {st.oldest_queued_age_s:.0f} s")
    for job_id, code, message in st.recent_failures:
        out.print(f"[red]failed[/red] {job_id} {code}: {message}")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What the video shows.")],
    seconds: Annotated[int, typer.Option(help="Duration in seconds.")] = 4,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "720x1280",
    model: Annotated[str | None, typer.Option(help="provider/model.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, for repeatable output.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the MP4.")] = Path(
        "video.mp4"
    ),
    api_url: Annotated[
        str | None, typer.Option(envvar="VIDPIPE_API_URL", help="Use a running server.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="VIDPIPE_API_KEY", help="Its key.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the video.")] = 900,
) -> None:
    """Make one video through the job system and save it; exit 1 with the reason if it fails."""
    from vidpipe.cli.generate import generate_embedded, generate_remote

    _quiet_logs()
    body: dict[str, Any] = {"prompt": prompt, "seconds": seconds, "size": size}
    if model:
        body["model"] = model
    if seed is not None:
        body["seed"] = seed
    try:
        if api_url:
            outcome = generate_remote(api_url, api_key, body, output, timeout_s=timeout)
        else:
            outcome = asyncio.run(generate_embedded(_settings(), body, output, timeout_s=timeout))
    except VidpipeError as exc:
        raise _fail(exc) from None
    if outcome.output is None:
        err.print(f"[red]video {outcome.job_id} {outcome.status}:[/red] {outcome.error}")
        raise typer.Exit(1)
    err.print(f"[green]video {outcome.job_id} completed[/green]")
    out.print(str(outcome.output))


@app.command()
def short(
    topic: Annotated[str | None, typer.Argument(help="What the short is about.")] = None,
    template: Annotated[str, typer.Option(help="Template name (GET /v1/templates).")] = (
        "fun_facts"
    ),
    script_file: Annotated[
        Path | None, typer.Option("--script", help="A text file with your own narration.")
    ] = None,
    aspect: Annotated[str | None, typer.Option(help="9:16, 16:9 or 1:1.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Target length in seconds.")] = None,
    voice: Annotated[str | None, typer.Option(help="Voice name of the speech engine.")] = None,
    visual_model: Annotated[
        str, typer.Option(help='"procedural" or a video model for a clip per scene.')
    ] = "procedural",
    music: Annotated[bool | None, typer.Option(help="A music bed (template default).")] = None,
    seed: Annotated[int, typer.Option(help="Seed, for a different but repeatable short.")] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the MP4.")] = Path(
        "short.mp4"
    ),
    api_url: Annotated[
        str | None, typer.Option(envvar="VIDPIPE_API_URL", help="Use a running server.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="VIDPIPE_API_KEY", help="Its key.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the video.")] = 1800,
) -> None:
    """Make a faceless short: topic (or your script) in, a finished MP4 out. Offline by
    default: script, voice, visuals, captions and music are all made here."""
    from vidpipe.cli.generate import generate_remote, short_embedded

    _quiet_logs()
    body: dict[str, Any] = {"template": template, "seed": seed, "visual_model": visual_model}
    if topic:
        body["topic"] = topic
    if script_file is not None:
        body["script"] = script_file.read_text(encoding="utf-8")
    for key, value in (
        ("aspect_ratio", aspect),
        ("target_seconds", seconds),
        ("voice", voice),
        ("music", music),
    ):
        if value is not None:
            body[key] = value
    try:
        if api_url:
            outcome = generate_remote(
                api_url, api_key, body, output, timeout_s=timeout, path="/v1/shorts"
            )
        else:
            outcome = asyncio.run(short_embedded(_settings(), body, output, timeout_s=timeout))
    except VidpipeError as exc:
        raise _fail(exc) from None
    if outcome.output is None:
        err.print(f"[red]short {outcome.job_id} {outcome.status}:[/red] {outcome.error}")
        raise typer.Exit(1)
    err.print(f"[green]short {outcome.job_id} completed[/green]")
    out.print(str(outcome.output))


@app.command()
def batch(
    file: Annotated[Path, typer.Argument(help="JSONL: one video request per line.")],
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a CSV (or .jsonl) report here.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the batch.")] = 3600,
) -> None:
    """Make many videos from a file, with a progress bar; exit 1 if any failed."""
    from vidpipe.cli.batch import run_batch

    try:
        status = asyncio.run(run_batch(_settings(), file, report, timeout_s=timeout))
    except VidpipeError as exc:
        raise _fail(exc) from None
    counts = status["counts"]
    assert isinstance(counts, dict)
    err.print(f"batch {status['id']}: {counts}, refused {status['refused']}")
    if status["refused"] or set(counts) - {"completed"}:
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """The newest jobs of every tenant in this installation's database."""
    from vidpipe.cli.jobs import list_jobs

    jobs = asyncio.run(list_jobs(_settings(), limit=limit, status=status))
    if as_json:
        for job in jobs:
            sys.stdout.write(json.dumps(job.__dict__, default=str) + "\n")
        return
    table = Table("id", "status", "progress", "model", "seconds", "size", "created (UTC)", "error")
    for job in jobs:
        table.add_row(
            job.id,
            job.status,
            f"{job.progress}%",
            job.model,
            str(job.seconds),
            job.size,
            _when(job.created_at),
            job.error_message or "",
        )
    out.print(table)


@jobs_app.command("show")
def jobs_show(job_id: str) -> None:
    """A job with its steps, attempts and events."""
    from vidpipe.cli.jobs import show_job

    try:
        job, steps, attempts, events = asyncio.run(show_job(_settings(), job_id))
    except VidpipeError as exc:
        raise _fail(exc) from None
    out.print(
        f"[bold]{job.id}[/bold]  {job.status} {job.progress}%  {job.model}  "
        f"{job.seconds}s {job.size}"
    )
    out.print(f"prompt: {job.prompt}")
    if job.error_code:
        out.print(f"[red]error {job.error_code}:[/red] {job.error_message}")
    table = Table("step", "state", "progress", "attempts", "error")
    for s in steps:
        table.add_row(
            s.name, s.state, f"{s.progress}%", str(s.attempt_count), s.error_message or ""
        )
    out.print(table)
    table = Table("attempt", "state", "provider job", "class", "error")
    for a in attempts:
        table.add_row(
            str(a.number),
            a.state,
            a.provider_job_id or "-",
            a.error_class or "",
            a.error_message or "",
        )
    out.print(table)
    for e in events:
        out.print(f"{_when(e.created_at)}  {e.type:<18} {json.dumps(e.data)}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    from vidpipe.cli.jobs import cancel_job

    try:
        job = asyncio.run(cancel_job(_settings(), job_id))
    except VidpipeError as exc:
        raise _fail(exc) from None
    out.print(f"{job.id} {job.status}")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
    scope: Annotated[str, typer.Option(help="admin or user.")] = "user",
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Create an API key. The key is printed once, alone on the last line of stdout."""
    from vidpipe.cli.keys import create_key

    if scope not in ("admin", "user"):
        err.print("[red]--scope must be admin or user[/red]")
        raise typer.Exit(2)
    record, secret = asyncio.run(create_key(_settings(), tenant, scope, name))
    err.print(
        f"created key {record.prefix} ({record.scope}) for tenant {tenant}; it is shown only now:"
    )
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="Tenant name.")]) -> None:
    """The keys of a tenant (prefixes only)."""
    from vidpipe.cli.keys import list_keys

    try:
        keys = asyncio.run(list_keys(_settings(), tenant))
    except VidpipeError as exc:
        raise _fail(exc) from None
    table = Table("id", "prefix", "scope", "name", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.prefix,
            k.scope,
            k.name or "",
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke a key (effective within seconds)."""
    from vidpipe.cli.keys import revoke_key

    try:
        asyncio.run(revoke_key(_settings(), key))
    except VidpipeError as exc:
        raise _fail(exc) from None
    err.print(f"revoked {key}")


@costs_app.command("report")
def costs_report(
    period: Annotated[str, typer.Option(help="week or month (the last 7 or 30 days).")] = "week",
    group_by: Annotated[str, typer.Option(help="day,provider,model,tenant")] = "day,provider",
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
) -> None:
    """Spend, jobs, seconds, failures and what the failures cost."""
    from vidpipe.cli import costs

    if period not in costs.DAYS:
        err.print("[red]--period must be week or month[/red]")
        raise typer.Exit(2)
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    rows = asyncio.run(costs.usage_report(_settings(), period=period, group_by=groups))
    if as_csv:
        sys.stdout.write(costs.as_csv(rows))
        return
    table = Table(*(rows[0].keys() if rows else ["(no usage)"]))
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)
    total = sum(float(r["spend_usd"]) for r in rows)
    out.print(f"total spend: ${total:.2f} over the last {costs.DAYS[period]} days")


@budgets_app.command("set")
def budgets_set(
    scope: Annotated[str, typer.Option(help='"global" or a tenant name.')],
    period: Annotated[str, typer.Option(help="day or month (UTC).")],
    usd: Annotated[float | None, typer.Option(help="The ceiling; omit to remove it.")] = None,
) -> None:
    """Set or remove a budget; at 100 % new billable work for its scope waits."""
    from vidpipe.cli import costs

    if period not in ("day", "month"):
        err.print("[red]--period must be day or month[/red]")
        raise typer.Exit(2)
    try:
        asyncio.run(costs.set_budget(_settings(), scope, period, usd))  # type: ignore[arg-type]
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    err.print(f"budget {scope}/{period}: {'removed' if usd is None else f'${usd:.2f}'}")


@budgets_app.command("list")
def budgets_list() -> None:
    """Budgets with what is reserved, spent and left this period."""
    from vidpipe.cli import costs

    table = Table("scope", "period", "limit", "reserved", "spent", "left", "used")
    for view in asyncio.run(costs.budget_list(_settings())):
        data = view.to_json()
        table.add_row(
            view.scope,
            view.period,
            f"${data['limit_usd']:.2f}",
            f"${data['reserved_usd']:.2f}",
            f"${data['spent_usd']:.2f}",
            f"${data['remaining_usd']:.2f}",
            f"{data['used_percent']}%",
        )
    out.print(table)


@credits_app.command("add")
def credits_add(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    usd: Annotated[float, typer.Option(help="Amount; negative takes balance away.")],
    note: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
) -> None:
    """Change a tenant's prepaid balance, with an audit entry."""
    from vidpipe.cli import costs
    from vidpipe.money.units import to_usd

    try:
        balance = asyncio.run(costs.add_credits(_settings(), tenant, usd, note))
    except (ValueError, VidpipeError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    out.print(f"balance of {tenant}: ${to_usd(balance):.2f}")


def _quiet_logs() -> None:
    """Interactive commands show a progress bar: the embedded worker's info logs would
    bury it, so only warnings print unless VIDPIPE_LOG_LEVEL asks for more."""
    if "VIDPIPE_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)


def main() -> None:
    from vidpipe.obs import logging as obs_logging
    from vidpipe.obs import tracing

    obs_logging.setup()  # VIDPIPE_LOG_FORMAT (auto, json, console), VIDPIPE_LOG_LEVEL
    tracing.setup()  # exports spans when an OTLP endpoint is configured
    # Per-request and per-query chatter stays out of the operator's terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("vidpipe.executor").setLevel(logging.WARNING)
    app()
