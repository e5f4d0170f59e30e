"""The files in deploy/: systemd units that systemd itself accepts and that run real vidgate
commands, an environment example that lists exactly the settings there are (with their real
defaults), and proxy configs that nginx and Caddy accept with limits that match vidgate's.

`tests/e2e/test_reverse_proxy.py` runs the nginx config (`nginx -t`, then in front of real
vidgate processes)."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import uvicorn
from pydantic import ValidationError
from typer.main import get_command

from vidgate.api import admin, uploads, videos
from vidgate.cli import app
from vidgate.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
ENV_EXAMPLE = DEPLOY / "vidgate.env.example"
NGINX_SITE = DEPLOY / "nginx" / "vidgate.conf"
CADDYFILE = DEPLOY / "caddy" / "Caddyfile"
#: Where the units expect the console script (docs/deployment.md installs it there).
VIDGATE_BIN = "/opt/vidgate/bin/vidgate"
#: Instance names the templates are checked with: a port for the API, a label for workers.
INSTANCES = {"vidgate-api@.service": "8001", "vidgate-worker@.service": "1"}
#: The worker hands its tasks back within 10 s of SIGTERM (worker.py); serve then waits up to
#: 15 s for open requests (cli.py). systemd must not SIGKILL before both are done.
GRACEFUL_STOP_SECONDS = 10 + 15
#: `VIDGATE_*` names that are not server settings but appear in the docs (client, tests).
NOT_SETTINGS = {"VIDGATE_API_KEY", "VIDGATE_BASE_URL", "VIDGATE_TEST_PG_URL", "VIDGATE_BENCH_PG_URL"}
#: typer carries its own copy of click; its exception classes are reached through a public one.
UsageError = typer.BadParameter.__bases__[0]
ClickException = UsageError.__bases__[0]


def need(tool: str) -> str:
    """The tool's path; a skip when it is missing, a failure under CI."""
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        hint = " (`make proxy-deps` installs it)" if tool in {"nginx", "caddy"} else ""
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed{hint}")
        pytest.skip(f"{tool} is not installed{hint}")
    return path


# --- systemd -------------------------------------------------------------------------------------


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in {".service", ".timer", ".target"})


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: keys may repeat, so no configparser."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def unit_value(path: Path, section: str, key: str) -> str | None:
    values = [v for k, v in parse_unit(path).get(section, []) if k == key]
    return values[-1] if values else None


def instance_name(path: Path) -> str:
    return path.name.replace("@.", f"@{INSTANCES[path.name]}.") if "@." in path.name else path.name


#: Where systemd keeps its own units (sysinit.target, ...), which a unit's defaults depend on.
SYSTEM_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
)


def systemd_root(directory: Path, *, typo: bool = False) -> Path:
    """A file system root with systemd's own units, the shipped units unchanged in
    /etc/systemd/system, and an executable at /opt/vidgate/bin/vidgate (what ExecStart runs is
    checked against the CLI below). `typo` misspells a key and a value, to show the check works."""
    assert SYSTEM_UNITS is not None, "systemd's unit directory is missing"
    root = directory / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for path in unit_files():
        text = path.read_text()
        if typo and path.name == "vidgate-api@.service":
            text = text.replace("ProtectSystem=strict", "ProtectSytem=strict")
            text = text.replace("Restart=on-failure", "Restart=sometimes")
        (root / "etc/systemd/system" / path.name).write_text(text)
    binary = root / VIDGATE_BIN.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return root


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("systemd-analyze"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker on the units as shipped: unknown keys, bad values, missing units and
    an ExecStart that is not executable are all reported (as warnings: any output fails)."""
    root = systemd_root(tmp_path / "good")
    result = _analyze("verify", "--man=no", f"--root={root}", *(instance_name(p) for p in unit_files()))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )
    # The check itself works here: a misspelt key and a bad value are reported.
    broken = systemd_root(tmp_path / "typo", typo=True)
    result = _analyze("verify", "--man=no", f"--root={broken}", "vidgate-api@8001.service")
    assert "ProtectSytem" in result.stderr and "sometimes" in result.stderr, result.stderr


def test_units_are_hardened(tmp_path: Path) -> None:
    """systemd's exposure score of every service stays in its "OK" band (at most 2.5 of 10)."""
    root = systemd_root(tmp_path)
    for path in (p for p in unit_files() if p.suffix == ".service"):
        args = ("security", "--offline=yes", f"--root={root}", "--threshold=25", instance_name(path))
        result = _analyze(*args)
        assert result.returncode == 0, f"{path.name}:\n{result.stdout[-3000:]}{result.stderr}"


def test_every_service_runs_as_vidgate_with_the_shared_environment() -> None:
    for path in (p for p in unit_files() if p.suffix == ".service"):
        service = dict(parse_unit(path)["Service"])
        assert service["User"] == "vidgate" and service["Group"] == "vidgate", path.name
        assert service["EnvironmentFile"] == "/etc/vidgate/vidgate.env", path.name
        assert service["StateDirectory"] == "vidgate", path.name
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
        }.items():
            assert service.get(key) == value, f"{path.name}: {key}"


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|min|h)?", value)
    assert match, value
    return int(match[1]) * {"s": 1, None: 1, "min": 60, "h": 3600}[match[2]]


def test_long_running_units_stop_gracefully_and_migrate_first() -> None:
    for name in ("vidgate-api@.service", "vidgate-worker@.service"):
        path = UNITS / name
        unit, service = dict(parse_unit(path)["Unit"]), dict(parse_unit(path)["Service"])
        assert service["Restart"] == "on-failure"
        assert service["KillSignal"] == "SIGTERM"
        assert _seconds(service["TimeoutStopSec"]) > GRACEFUL_STOP_SECONDS, name
        assert int(service["LimitNOFILE"]) >= 16384, name
        assert "vidgate-migrate.service" in unit["Requires"].split(), name
        assert "vidgate-migrate.service" in unit["After"].split(), name
        assert unit_value(path, "Install", "WantedBy") == "vidgate.target"
    # Without RemainAfterExit the oneshot runs again before every start or restart of a unit.
    migrate = dict(parse_unit(UNITS / "vidgate-migrate.service")["Service"])
    assert migrate["Type"] == "oneshot" and migrate.get("RemainAfterExit", "no") == "no"
    assert unit_value(UNITS / "vidgate-gc.timer", "Timer", "OnCalendar")
    assert (UNITS / "vidgate-gc.service").exists()  # the timer's unit, by its default name


def _exec_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in unit_files():
        for key, value in parse_unit(path).get("Service", []):
            if key.startswith("Exec"):
                argv = shlex.split(value.lstrip("-@:+!").replace("%i", INSTANCES.get(path.name, "x")))
                found.append((path.name, argv))
    return found


def _subcommand(name: str) -> tuple[typer.Context, Any]:
    group = get_command(app)
    parent = typer.Context(group, info_name="vidgate")
    return parent, group.get_command(parent, name)  # type: ignore[attr-defined]


def test_every_exec_line_is_a_real_vidgate_command() -> None:
    """Each command line parses against the CLI itself: the subcommand and every option exist and
    their values convert (e.g. `--port %i` with the instance 8001)."""
    seen = set()
    for unit, argv in _exec_commands():
        assert argv[0] == VIDGATE_BIN, f"{unit}: {argv}"
        parent, command = _subcommand(argv[1])
        assert command is not None, f"{unit}: no command {argv[1]!r}"
        try:
            command.make_context(argv[1], argv[2:], parent=parent)
        except ClickException as exc:
            pytest.fail(f"{unit}: {shlex.join(argv)}: {exc.format_message()}")
        seen.add(argv[1])
    assert seen == {"serve", "worker", "migrate", "gc"}


def test_exec_line_check_catches_a_wrong_option() -> None:
    parent, serve = _subcommand("serve")
    with pytest.raises(UsageError, match="--listen"):
        serve.make_context("serve", ["--no-worker", "--listen", "8001"], parent=parent)
    with pytest.raises(typer.BadParameter):
        serve.make_context("serve", ["--port", "%i"], parent=parent)
    assert _subcommand("start")[1] is None


# --- the environment file ------------------------------------------------------------------------

_LINE = re.compile(r"(?P<off>#)?(?P<name>VIDGATE_[A-Z0-9_]+)=(?P<value>.*)")


def env_example() -> dict[str, tuple[bool, str]]:
    """name -> (active, value). Only plain `KEY=value` lines, which systemd and a shell read alike."""
    entries: dict[str, tuple[bool, str]] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        match = _LINE.fullmatch(line)
        if match is None:
            assert not line or line.startswith("# ") or line == "#", f"line {number}: {line!r}"
            continue
        name, value = match["name"], match["value"]
        assert name not in entries, f"line {number}: {name} twice"
        # systemd strips quotes and backslashes and keeps a trailing `# ...`; a shell would not.
        assert not re.search(r"[\"'\\$`]|\s#|^\s|\s$", value), f"line {number}: {value!r}"
        entries[name] = (match["off"] is None, value)
    return entries


def setting_names() -> set[str]:
    return {f"VIDGATE_{name.upper()}" for name in Settings.model_fields}


def _clear_vidgate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VIDGATE_"):
            monkeypatch.delenv(name)


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = set(env_example())
    assert not listed - setting_names(), f"not settings: {sorted(listed - setting_names())}"
    assert not setting_names() - listed, f"missing from the example: {sorted(setting_names() - listed)}"


def test_env_example_shows_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commented line shows the default: read through the environment, as systemd passes it,
    it gives the same value as no line at all."""
    _clear_vidgate_env(monkeypatch)
    defaults = Settings()
    commented = {name for name, (active, _) in env_example().items() if not active}
    for name in commented:
        monkeypatch.setenv(name, env_example()[name][1])
    shown = Settings()
    for field in Settings.model_fields:
        if f"VIDGATE_{field.upper()}" in commented:
            assert getattr(shown, field) == getattr(defaults, field), field


def test_env_example_active_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_vidgate_env(monkeypatch)
    active = {name: value for name, (on, value) in env_example().items() if on}
    assert {"VIDGATE_DATA_DIR", "VIDGATE_DATABASE_URL", "VIDGATE_PUBLIC_URL"} <= set(active)
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert str(settings.data_dir) == "/var/lib/vidgate"  # the units' StateDirectory=vidgate
    assert settings.effective_database_url.startswith("postgresql://")


def test_docs_and_configs_name_only_real_settings() -> None:
    known = setting_names() | NOT_SETTINGS
    for path in [ROOT / "docs" / "deployment.md", NGINX_SITE, CADDYFILE, *unit_files()]:
        for name, family in re.findall(r"(VIDGATE_[A-Z0-9_]*[A-Z0-9])(_\*)?", path.read_text()):
            # `VIDGATE_S3_*` names a family: some setting must start with it.
            ok = any(k.startswith(name + "_") for k in known) if family else name in known
            assert ok, f"{path.name}: {name}{family} is not a setting"


# --- forwarded headers (VIDGATE_FORWARDED_ALLOW_IPS) ---------------------------------------------


def test_forwarded_allow_ips_accepts_addresses_networks_and_star() -> None:
    assert Settings().forwarded_allow_ips == "127.0.0.1,::1"
    assert Settings(forwarded_allow_ips=" 10.0.0.0/8, 192.0.2.7 ,::1").forwarded_allow_ips == (
        "10.0.0.0/8,192.0.2.7,::1"
    )
    assert Settings(forwarded_allow_ips="*").forwarded_allow_ips == "*"
    assert Settings(forwarded_allow_ips="").forwarded_allow_ips == ""
    with pytest.raises(ValidationError, match=re.escape("proxy.internal")):
        Settings(forwarded_allow_ips="127.0.0.1,proxy.internal")


# --- nginx ---------------------------------------------------------------------------------------


def _nginx_directives(name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", NGINX_SITE.read_text(), re.MULTILINE)


def _nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2}[unit.lower()]


def test_nginx_limits_sit_above_vidgates_own() -> None:
    """vidgate answers a too-large body with its own 413 in its envelope; nginx's ceiling must be
    above every such limit so that nginx never answers first, and its read timeout must outlast
    the longest `Prefer: wait` hold."""
    sizes = [_nginx_size(v) for v in _nginx_directives("client_max_body_size")]
    assert min(sizes) > max(videos.MAX_BODY_BYTES, admin.MAX_BODY_BYTES)
    # vidgate refuses a declared upload over its limit + 64 KiB of multipart wrapping itself.
    assert max(sizes) > uploads.MAX_UPLOAD_BYTES + 64 * 1024
    (read_timeout,) = _nginx_directives("proxy_read_timeout")
    assert _seconds(read_timeout) > videos.MAX_PREFER_WAIT + 10
    # nginx drops an idle upstream connection before uvicorn does (`vidgate serve` keeps the default).
    (idle,) = _nginx_directives("keepalive_timeout")
    assert _seconds(idle) < inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default


# --- Caddy ---------------------------------------------------------------------------------------


def test_caddy_accepts_the_caddyfile(tmp_path: Path) -> None:
    caddy = need("caddy")
    result = subprocess.run(
        [caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
        },
    )
    assert result.returncode == 0 and "Valid configuration" in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )
    text = CADDYFILE.read_text()
    (max_size,) = re.findall(r"max_size (\d+)MiB", text)
    assert int(max_size) * 1024**2 > uploads.MAX_UPLOAD_BYTES + 64 * 1024
    (timeout,) = re.findall(r"response_header_timeout (\d+)s", text)
    assert int(timeout) > videos.MAX_PREFER_WAIT + 10
