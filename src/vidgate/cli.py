"""The `vidgate` command: server side (serve, worker, migrate, keys, providers) and client side
(models, generate, bench)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import runpy
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vidgate.config import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
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
    database = Database(settings.effective_database_url)
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
        access_log=False,
        timeout_graceful_shutdown=15,
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
""",
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

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        assert gateway.worker is not None
        await gateway.worker.run(stop)

    asyncio.run(main())
    gateway.database.dispose()


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


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by")],
    expires_in: Annotated[
        str | None, typer.Option(help="Expire after this long: 30d, 12h, 90m, 3600")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="Expire at this time: ISO 8601 (UTC unless it says) or UNIX seconds")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Only these models, comma-separated (default all)")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (default no limit)")] = None,
    max_in_flight: Annotated[
        int | None, typer.Option(help="Tasks pending or processing at once (default no limit)")
    ] = None,
    balance: Annotated[
        str | None, typer.Option(help="Initial balance (a top-up); without one the key is unlimited")
    ] = None,
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from vidgate import keys

    with _key_settings():
        limits: dict[str, Any] = {
            "rpm": rpm,
            "max_in_flight": max_in_flight,
            "allowed_models": _models(models),
        }
        limits["expires_at"] = keys.expiry(expires_at=expires_at, expires_in=expires_in)
        record, secret = keys.create(_database(get_settings()), name, balance=balance, **limits)
    err.print(f"created key {record.id} ({record.name}), {_limits_text(record)}")
    err.print("store the key now: it is not shown again")
    print(secret)


@keys_app.command("update")
def keys_update(
    key_id: str,
    expires_in: Annotated[str | None, typer.Option(help="Expire this long from now; `none`: never")] = None,
    expires_at: Annotated[str | None, typer.Option(help="Expire at this time; `none`: never")] = None,
    models: Annotated[str | None, typer.Option(help="Only these models, comma-separated; `all`: all")] = None,
    rpm: Annotated[str | None, typer.Option(help="Requests per minute; `none`: no limit")] = None,
    max_in_flight: Annotated[str | None, typer.Option(help="Tasks at once; `none`: no limit")] = None,
) -> None:
    """Change a key's limits; options not given stay as they are."""
    from vidgate import keys

    limits: dict[str, object] = {}
    with _key_settings():
        if models is not None:
            limits["allowed_models"] = None if models.strip().lower() == "all" else _models(models)
        for param, value in (("rpm", rpm), ("max_in_flight", max_in_flight)):
            if value is not None:
                limits[param] = _whole_or_none(value, param)
        # `none` clears the expiry; an option that was not given is None, not "none".
        never = any(v is not None and v.strip().lower() == "none" for v in (expires_at, expires_in))
        if expires_at is not None or expires_in is not None:
            limits["expires_at"] = (
                None if never else keys.expiry(expires_at=expires_at, expires_in=expires_in)
            )
        if not limits:
            raise keys.InvalidSetting("key_id", "needs at least one option to change (see --help)")
        record = keys.update(_database(get_settings()), key_id, **limits)
    if record is None:
        err.print(f"no key {key_id}")
        raise typer.Exit(1)
    print(f"updated {record.id}: {_limits_text(record)}")


@keys_app.command("list")
def keys_list() -> None:
    """List keys with their limits and balances (never their secrets)."""
    from rich.table import Table

    from vidgate import keys

    table = Table("id", "name", "prefix", "status", "created", "last used", "expires", "models")
    for column in ("rpm", "in flight", "balance", "used"):
        table.add_column(column, justify="right")
    for k in keys.list_keys(_database(get_settings())):
        table.add_row(
            k.id,
            k.name,
            k.prefix + "…",
            k.state,
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.expires_at),
            ",".join(k.allowed_models) if k.allowed_models is not None else "all",
            str(k.rpm or "-"),
            str(k.max_in_flight or "-"),
            _money(k.balance),
            _money(k.used),
        )
    _table_console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; its requests get 401 from then on."""
    from vidgate import keys

    if not keys.revoke(_database(get_settings()), key_id):
        err.print(f"no active key {key_id}")
        raise typer.Exit(1)
    print(f"revoked {key_id}")


@keys_app.command("top-up")
def keys_top_up(
    key_id: str,
    amount: Annotated[str, typer.Argument(help="Money to add, e.g. 10 or 2.5")],
    note: Annotated[str | None, typer.Option(help="A note kept in the ledger")] = None,
) -> None:
    """Add money to a key (an unlimited key becomes metered); prints the new balance."""
    from vidgate import keys, ledger

    with _key_settings():
        value = keys.parse_amount(amount, "amount")
    try:
        balance = ledger.top_up(_database(get_settings()), key_id, value, note=note)
    except KeyError:
        err.print(f"no key {key_id}")
        raise typer.Exit(1) from None
    print(f"{key_id} balance {_money(balance)}")


@keys_app.command("usage")
def keys_usage(
    key_id: str, limit: Annotated[int, typer.Option(min=1, help="Newest ledger rows to show")] = 50
) -> None:
    """A key's balance, what it has used, and its ledger (holds, captures, releases, top-ups)."""
    from rich.table import Table

    from vidgate import keys, ledger

    database = _database(get_settings())
    record = keys.get(database, key_id)
    if record is None:
        err.print(f"no key {key_id}")
        raise typer.Exit(1)
    table = Table("#", "time", "kind", "task", "note")
    table.add_column("amount", justify="right")
    table.add_column("balance after", justify="right")
    for row in ledger.entries(database, key_id, limit=limit):
        table.add_row(
            str(row.id),
            _when(row.created_at),
            row.kind,
            row.task_id or "-",
            row.note or "",
            _money(row.amount),
            _money(row.balance_after),
        )
    _table_console().print(table)
    print(f"{record.id} balance {_money(record.balance)}, used {_money(record.used)}")


@contextlib.contextmanager
def _key_settings() -> Iterator[None]:
    """A bad option value ends the command with its name and the rule, exit status 2."""
    from vidgate import keys

    try:
        yield
    except keys.InvalidSetting as exc:
        option = {"allowed_models": "--models", "amount": "AMOUNT", "key_id": "KEY_ID"}.get(
            exc.param, "--" + exc.param.replace("_", "-")
        )
        err.print(f"{option} {exc.detail}")
        raise typer.Exit(2) from None


def _models(value: str | None) -> list[str] | None:
    return None if value is None else [m.strip() for m in value.split(",") if m.strip()]


def _whole_or_none(value: str, param: str) -> int | None:
    from vidgate import keys

    if value.strip().lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise keys.InvalidSetting(param, f"must be a whole number or `none` (got {value!r})") from None


def _limits_text(key: Any) -> str:
    models = ",".join(key.allowed_models) if key.allowed_models is not None else "all"
    return (
        f"models {models}, rpm {key.rpm or 'unlimited'}, in flight {key.max_in_flight or 'unlimited'}, "
        f"expires {_when(key.expires_at) if key.expires_at else 'never'}, balance {_money(key.balance)}"
    )


def _money(value: object) -> str:
    from decimal import Decimal

    if value is None:
        return "unlimited"
    return format(Decimal(str(value)).normalize(), "f")


def _table_console() -> Console:
    """Tables keep their columns whole when piped (rich would squeeze them to 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=240)


def _when(value: float | None) -> str:
    import datetime

    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


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
