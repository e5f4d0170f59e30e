"""The `vidgate` command: server side (serve, worker, migrate, keys, providers) and client side
(models, generate, bench)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import runpy
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from vidgate.cli_keys import keys_app
from vidgate.config import Settings, get_settings

if TYPE_CHECKING:
    from vidgate.metrics import WorkerMetricsServer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(keys_app, name="keys")
err = Console(stderr=True)


def _log_setup() -> None:
    """Text lines, or JSON objects with `VIDGATE_LOG_FORMAT=json` (see logs.py)."""
    from vidgate import logs

    logs.setup(os.environ.get("VIDGATE_LOG_FORMAT", "text"), level=logging.INFO)


def _database(settings: Settings, *, migrate: bool = True):  # type: ignore[no-untyped-def]
    from vidgate import migrations
    from vidgate.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    if migrate:
        migrations.upgrade(database)
    return database


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (safe to run from several processes at once)."""
    from vidgate import migrations

    settings = get_settings()
    database = _database(settings)
    print(f"database at revision {migrations.current_revision(database)}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; run `vidgate worker` elsewhere")
    ] = False,
    quickstart: Annotated[bool, typer.Option(help="Print a ready-to-use API key and a curl example")] = False,
) -> None:
    """Run the API (and, unless --no-worker, a worker) in this process. Migrates on start."""
    import uvicorn

    from vidgate.api import create_app

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = get_settings(**overrides)
    _log_setup()
    database = _database(settings)
    if quickstart:
        _print_quickstart(settings, database)
    database.dispose()
    uvicorn.run(
        create_app(settings, run_worker=not no_worker),
        host=settings.host,
        port=settings.port,
        log_level="info",
        # uvicorn's own logging config would give its loggers text handlers: ours (_log_setup) serve.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
        # Behind a reverse proxy: the scheme (and client address) the proxy saw, from these peers only.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def _where(settings: Settings) -> str:
    url = settings.effective_database_url
    return f"SQLite at {url.removeprefix('sqlite:///')}" if url.startswith("sqlite") else url.split("@")[-1]


def _print_quickstart(settings: Settings, database) -> None:  # type: ignore[no-untyped-def]
    from vidgate import keys

    key_file = settings.data_dir / "quickstart.key"
    secret = key_file.read_text().strip() if key_file.exists() else ""
    if not secret or keys.authenticate(database, secret) is None:
        _, secret = keys.create(database, "quickstart")
        key_file.write_text(secret + "\n")
        key_file.chmod(0o600)
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    console = f"\nOr in the browser: open {base}/ and paste the key.\n" if settings.console else ""
    print(
        f"""
vidgate is starting on {base} (database: {_where(settings)}).

API key (kept in {key_file}):
  {secret}

Try it:
  export VIDGATE_API_KEY={secret}
  curl -s {base}/v1/videos/generations \\
    -H "Authorization: Bearer $VIDGATE_API_KEY" -H "Content-Type: application/json" \\
    -d '{{"model": "pixverse-v6", "prompt": "a red kite over the sea at dawn", "duration": 5, "audio": true}}'
  curl -s {base}/v1/tasks/<task_id> -H "Authorization: Bearer $VIDGATE_API_KEY"

Or with the client:
  export VIDGATE_BASE_URL={base}
  vidgate generate --model pixverse-v6 --prompt "a red kite" --wait -o kite.mp4
{console}""",
        flush=True,
    )


@app.command()
def worker() -> None:
    """Run a worker only (for the scale-out shape: many workers on one PostgreSQL)."""
    from vidgate.api import build_gateway

    settings = get_settings()
    _log_setup()
    _database(settings).dispose()
    gateway = build_gateway(settings, run_worker=True)
    assert gateway.worker is not None
    counters = _worker_metrics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        assert gateway.worker is not None
        await gateway.worker.run(stop)

    try:
        asyncio.run(main())
    finally:
        if counters is not None:
            counters.close()
        gateway.database.dispose()


def _worker_metrics(settings: Settings) -> WorkerMetricsServer | None:
    """The worker's counters at /metrics when VIDGATE_METRICS and VIDGATE_WORKER_METRICS_PORT say
    so; a port already taken stops the worker at start rather than leaving it silently unscraped."""
    from vidgate.metrics import WorkerMetricsServer

    if not settings.worker_metrics_port:
        return None
    if not settings.metrics:
        logging.getLogger("vidgate").warning(
            "VIDGATE_WORKER_METRICS_PORT is set but VIDGATE_METRICS is not: no worker metrics served"
        )
        return None
    host, port = settings.host, settings.worker_metrics_port
    try:
        server = WorkerMetricsServer(host, port, token=settings.metrics_token)
    except OSError as exc:
        err.print(f"cannot serve worker metrics on {host}:{port}: {exc}")
        raise typer.Exit(1) from None
    server.start()
    logging.getLogger("vidgate").info("worker metrics at http://%s:%d/metrics", host, port)
    return server


@app.command("gc")
def gc_command() -> None:
    """Delete expired uploads and results (and stray scratch files) now; workers also do this
    every VIDGATE_GC_INTERVAL_SECONDS. Safe while workers run."""
    from vidgate import gc
    from vidgate.storage import open_storage

    settings = get_settings()
    _log_setup()
    database = _database(settings)
    try:
        report = gc.collect(database, open_storage(settings))
    finally:
        database.dispose()
    print(report.summary())


@app.command()
def providers() -> None:
    """List providers, whether each is enabled here, and the route of every model."""
    from vidgate import catalog
    from vidgate.providers import Router

    router = Router(get_settings())
    for name, cls in sorted(router.classes.items()):
        state = "enabled" if name in router.enabled else "disabled"
        print(f"{name:10} {state:9} models: {', '.join(sorted(cls.models))}")
    for model in catalog.MODELS:
        print(f"route {model}: {' -> '.join(router.route(model)) or '(none)'}")


@app.command()
def models() -> None:
    """List the models this vidgate serves (from the catalog; no server needed)."""
    from vidgate import catalog

    for name, cls in catalog.MODELS.items():
        print(f"{name:12} {cls.summary}")


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="Model id, e.g. pixverse-v6")],
    prompt: Annotated[str, typer.Option(help="What the video shows")],
    image: Annotated[list[str] | None, typer.Option(help="Image URL or local file (repeatable)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Extra parameter key=value (JSON values)")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result with a progress bar")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to save the MP4")] = None,
    base_url: Annotated[str, typer.Option(envvar="VIDGATE_BASE_URL")] = "http://127.0.0.1:8000",
    api_key: Annotated[str, typer.Option(envvar="VIDGATE_API_KEY")] = "",
) -> None:
    """Submit a generation to a running vidgate; with --wait, follow it and download the video."""
    from vidgate.client_cli import run_generate

    if not api_key:
        err.print("set VIDGATE_API_KEY or pass --api-key")
        raise typer.Exit(2)
    extra = {}
    for item in param or []:
        name, sep, raw = item.partition("=")
        if not sep:
            err.print(f"--param {item!r}: expected key=value")
            raise typer.Exit(2)
        try:
            extra[name] = json.loads(raw)
        except json.JSONDecodeError:
            extra[name] = raw
    code = run_generate(
        base_url=base_url,
        api_key=api_key,
        model=model,
        prompt=prompt,
        images=image or [],
        params=extra,
        wait=wait or output is not None,
        output=output,
    )
    raise typer.Exit(code)


@app.command()
def bench(
    output: Annotated[Path, typer.Option(help="Where to write the JSON figures")] = Path(
        "bench/results/latest.json"
    ),
    only: Annotated[
        str | None, typer.Option(help="Run one benchmark: renderer, api, relay, scale or gpu")
    ] = None,
) -> None:
    """Run the benchmarks in ./bench (from a source checkout) and write their figures as JSON."""
    script = Path("bench/run.py")
    if not script.exists():
        err.print("benchmarks live in the source checkout: run `vidgate bench` from its root")
        raise typer.Exit(2)
    sys.argv = [str(script), "--output", str(output), *(["--only", only] if only else [])]
    os.environ.setdefault("PYTHONHASHSEED", "0")
    runpy.run_path(str(script), run_name="__main__")


def main() -> None:
    app()
