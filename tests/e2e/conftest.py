"""A real `vidgate serve` process on a loopback port, driven over HTTP like a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

VIDGATE = [sys.executable, "-m", "vidgate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIDGATE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Server:
    data_dir: Path
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    key: str = ""
    extra_args: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*VIDGATE, "serve", "--port", str(self.port), *self.extra_args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"vidgate serve did not start:\n{self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)


def make_server(tmp: Path, **env: str) -> Server:
    data_dir = tmp / "data"
    full_env = {
        **os.environ,
        "VIDGATE_DATA_DIR": str(data_dir),
        "VIDGATE_POLL_INTERVAL_SECONDS": "0.1",
        "VIDGATE_LOCAL_PRESET": "ultrafast",
        **env,
    }
    server = Server(data_dir=data_dir, port=free_port(), env=full_env, log=tmp / "serve.log")
    created = run_cli(full_env, "keys", "create", "--name", "e2e")
    assert created.returncode == 0, created.stderr
    server.key = created.stdout.strip().splitlines()[-1]
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("e2e"), VIDGATE_ALLOW_PRIVATE_URLS="true")
    srv.start()
    yield srv
    srv.stop()


def wait_for(
    client: httpx.Client,
    task_id: str,
    *,
    timeout: float = 120,
    until: tuple[str, ...] = ("completed", "failed", "cancelled"),
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        response = client.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        if data["status"] in until:
            return data
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not reach {until} in {timeout} s")


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    codec: str
    pix_fmt: str
    audio: str | None
    audio_channels: int | None


def probe(path: Path) -> Probe:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        audio = container.streams.audio[0] if container.streams.audio else None
        return Probe(
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=float(video.average_rate or 0),
            frames=frames,
            duration=float(container.duration or 0) / 1_000_000,
            codec=video.codec_context.name,
            pix_fmt=str(video.codec_context.pix_fmt),
            audio=audio.codec_context.name if audio else None,
            audio_channels=audio.codec_context.channels if audio else None,
        )


def download(client: httpx.Client, url: str, target: Path) -> Path:
    # Signed URLs need no API key: fetch without it, as a browser <video> would.
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, response.text
    target.write_bytes(response.content)
    return target
