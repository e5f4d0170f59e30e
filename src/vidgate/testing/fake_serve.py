"""Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (tests) and stop it again."""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

_servers: dict[str, tuple[uvicorn.Server, threading.Thread]] = {}
_lock = threading.Lock()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> str:
    """Start `app` on an ephemeral port (lifespan on, so background tickers run); returns the base
    URL, e.g. `http://127.0.0.1:41234`. Stop it with `stop_server(base_url)`."""
    # log_config=None: no handler bound to whatever sys.stderr is now (a test's captured stream).
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", ws="none", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"fake-upstream-{id(app)}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://{host}:{bound}"
    with _lock:
        _servers[base_url] = (server, thread)
    return base_url


def stop_server(base_url: str, timeout_s: float = 10.0) -> None:
    """Ask the server started for `base_url` to exit (running the lifespan shutdown) and join it."""
    with _lock:
        entry = _servers.pop(base_url.rstrip("/"), None)
    if entry is None:
        return
    server, thread = entry
    server.should_exit = True
    thread.join(timeout_s)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`with serving(app) as base_url:` — serve_in_thread + stop_server."""
    base_url = serve_in_thread(app)
    try:
        yield base_url
    finally:
        stop_server(base_url)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for CLIs that must print their URL before binding)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_cli(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    default_port: int,
    config_cls: Any,
    create_app: Any,
) -> None:
    """`python -m vidgate.testing.fake_<name>`: the same flags for every fake upstream."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    parser.add_argument("--api-key", default=config_cls().api_key)
    parser.add_argument("--time-factor", type=float, default=1.0, help="virtual seconds per real second")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--config-json", default="{}", help="any other knobs, as a JSON object")
    args = parser.parse_args(argv)
    knobs = {**json.loads(args.config_json), "api_key": args.api_key, "time_factor": args.time_factor}
    if args.seed is not None:
        knobs["seed"] = args.seed
    port = args.port or free_port(args.host)
    print(f"http://{args.host}:{port}", flush=True)
    uvicorn.run(create_app(config_cls(**knobs)), host=args.host, port=port, log_level="warning", ws="none")
