"""`vidgate keys ...`: create, update, list, revoke, top up and inspect API keys (and rotate their
webhook signing secrets). Registered on the main command by `cli.py`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console

from vidgate.config import get_settings

keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
err = Console(stderr=True)


def _database(settings: Any) -> Any:
    from vidgate.cli import _database as open_database  # imported late: cli.py imports this module

    return open_database(settings)


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
        database = _database(get_settings())
        record, secret = keys.create(database, name, balance=balance, **limits)
        webhook_secret = keys.webhook_secret(database, record.id)
    err.print(f"created key {record.id} ({record.name}), {_limits_text(record)}")
    # stderr, so that stdout stays the key alone (scripts read it); rich must not wrap the secret.
    err.print(
        f"webhook signing secret (verifies callbacks): {webhook_secret}", soft_wrap=True, highlight=False
    )
    err.print("store the key and the webhook secret now: they are not shown again")
    typer.echo(secret)


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
    typer.echo(f"updated {record.id}: {_limits_text(record)}")


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
    typer.echo(f"revoked {key_id}")


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
    typer.echo(f"{key_id} balance {_money(balance)}")


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
    typer.echo(f"{record.id} balance {_money(record.balance)}, used {_money(record.used)}")


@keys_app.command("rotate-webhook-secret")
def keys_rotate_webhook_secret(key_id: str) -> None:
    """Give a key a new webhook signing secret, printed once; webhooks are signed with it from now on."""
    from vidgate import keys

    secret = keys.rotate_webhook_secret(_database(get_settings()), key_id)
    if secret is None:
        err.print(f"no key {key_id}")
        raise typer.Exit(1)
    err.print(f"new webhook signing secret of {key_id}: store it now, it is not shown again")
    typer.echo(secret)


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
