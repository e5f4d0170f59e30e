"""The shipped nginx config (deploy/nginx/vidgate.conf): accepted by `nginx -t`, then run in front
of two real `vidgate serve` processes as docs/deployment.md sets them up (one with its worker, one
API only, on one SQLite file, with VIDGATE_PUBLIC_URL set). nginx runs in the foreground from the
test, with its pid, logs and temporary files in a temporary directory; only the listening ports,
the upstream ports and the certificate are changed."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import png_bytes
from tests.test_deploy_files import NGINX_SITE, need

from .conftest import Server, free_port, make_server, wait_for

pytestmark = [pytest.mark.e2e]

PUBLIC = "https://video.example.com"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for video.example.com and 127.0.0.1, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    options = (
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
        " -subj /CN=video.example.com -addext subjectAltName=DNS:video.example.com,IP:127.0.0.1"
    )
    subprocess.run(
        [need("openssl"), *options.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in {NGINX_SITE.name}"
    return text.replace(old, new)


def render_nginx_site(*, api_ports: list[int], tls_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The shipped config with only what a test must change: loopback ports and the certificate.
    Each replaced line must be found, so the test cannot drift away from the file."""
    text = NGINX_SITE.read_text()
    text = _replace_once(text, "    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{tls_port} ssl http2;\n")
    text = _replace_once(text, "    listen [::]:443 ssl http2;\n", "")
    text = _replace_once(text, "    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n")
    text = _replace_once(text, "    listen [::]:80;\n", "")
    text = _replace_once(text, "/etc/letsencrypt/live/video.example.com/fullchain.pem", str(cert))
    text = _replace_once(text, "/etc/letsencrypt/live/video.example.com/privkey.pem", str(key))
    servers = list(re.finditer(r"^    server 127\.0\.0\.1:\d+( [^;\n]*)?;\n", text, re.MULTILINE))
    assert len(servers) >= 2, "the upstream block should list several API processes"
    options = servers[0][1] or ""
    lines = "".join(f"    server 127.0.0.1:{port}{options};\n" for port in api_ports)
    return text[: servers[0].start()] + lines + text[servers[-1].end() :]


def nginx_main_conf(directory: Path, site: Path) -> Path:
    """An nginx.conf that keeps everything (pid, logs, temporary files) inside `directory`, with
    an access log naming the API process that served each request."""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
    # As root, workers would run as `nobody` and could not use a private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format upstreams '$request_method $uri $status $upstream_addr';
    access_log {directory}/access.log upstreams;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {site};
}}
"""
    )
    return conf


def nginx_command(nginx: str, directory: Path, conf: Path, *args: str) -> list[str]:
    return [nginx, "-p", f"{directory}/", "-c", str(conf), "-e", str(directory / "error.log"), *args]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = need("nginx")
    cert, key = self_signed_cert(tmp_path)
    site = tmp_path / "vidgate.conf"
    site.write_text(
        render_nginx_site(api_ports=[18001, 18002], tls_port=18443, http_port=18080, cert=cert, key=key)
    )
    conf = nginx_main_conf(tmp_path, site)
    result = subprocess.run(
        nginx_command(nginx, tmp_path, conf, "-t"), capture_output=True, text=True, timeout=30, check=False
    )
    output = result.stdout + result.stderr + (tmp_path / "error.log").read_text()
    assert result.returncode == 0 and "syntax is ok" in output, output
    assert "[warn]" not in output and "[emerg]" not in output, output


@dataclass
class Nginx:
    directory: Path
    proc: subprocess.Popen[bytes]
    tls_port: int
    http_port: int
    cert: Path

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def client(self, key: str = "") -> httpx.Client:
        # As a browser at https://video.example.com would send it; the certificate names 127.0.0.1.
        headers = {"Host": "video.example.com"} | ({"Authorization": f"Bearer {key}"} if key else {})
        return httpx.Client(
            base_url=self.base,
            headers=headers,
            verify=ssl.create_default_context(cafile=str(self.cert)),
            timeout=60,
        )

    def upstreams(self) -> list[str]:
        """The API process (`127.0.0.1:port`) of each request so far, from the access log."""
        return [line.split()[-1] for line in (self.directory / "access.log").read_text().splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_nginx(directory: Path, api_ports: list[int]) -> Nginx:
    nginx = need("nginx")
    cert, key = self_signed_cert(directory)
    tls_port, http_port = free_port(), free_port()
    site = directory / "vidgate.conf"
    site.write_text(
        render_nginx_site(api_ports=api_ports, tls_port=tls_port, http_port=http_port, cert=cert, key=key)
    )
    conf = nginx_main_conf(directory, site)
    with (directory / "nginx.out").open("ab") as out:
        proc = subprocess.Popen(
            nginx_command(nginx, directory, conf, "-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT
        )
    server = Nginx(directory, proc, tls_port, http_port, cert)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    logs = (directory / "nginx.out").read_text() + (directory / "error.log").read_text()
    raise AssertionError(f"nginx did not start:\n{logs}")


@dataclass
class Stack:
    nginx: Nginx
    api: list[Server]
    key: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    need("nginx")
    tmp = tmp_path_factory.mktemp("proxy")
    first = make_server(tmp, VIDGATE_PUBLIC_URL=PUBLIC, VIDGATE_METRICS="true")
    second = Server(
        data_dir=first.data_dir,
        port=free_port(),
        env=first.env,
        log=tmp / "serve-2.log",
        key=first.key,
        extra_args=["--no-worker"],
    )
    api = [first, second]
    nginx: Nginx | None = None
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Server.start, api))
        nginx = start_nginx(tmp, [s.port for s in api])
        yield Stack(nginx, api, first.key)
    finally:
        if nginx is not None:
            nginx.stop()
        for server in api:
            server.stop()


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_submit_poll_and_ranged_download_through_nginx(stack: Stack) -> None:
    with stack.nginx.client(stack.key) as client:
        body = {"model": "pixverse-v6", "prompt": "through the proxy", "duration": 1, "resolution": "360p"}
        submitted = client.post("/v1/videos/generations", json=body)
        assert submitted.status_code == 200, submitted.text
        task_id = submitted.json()["data"][0]["task_id"]
        task = wait_for(client, task_id, timeout=120)
        assert task["status"] == "completed", task

        # Signed links name the public address, not the proxy's upstream or the request's.
        (url,) = task["result"]["videos"][0]["url"]
        assert url.startswith(f"{PUBLIC}/files/results/{task_id}/"), url
        assert task["result"]["thumbnail_url"].startswith(f"{PUBLIC}/files/"), task["result"]

    # A browser fetches the link without a key, and seeks in it with Range requests.
    with stack.nginx.client() as browser:
        full = browser.get(_path(url))
        assert full.status_code == 200, full.text
        assert full.headers["content-type"] == "video/mp4" and full.content[4:8] == b"ftyp"
        size = len(full.content)
        assert size > 2000

        part = browser.get(_path(url), headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206, part.text
        assert part.headers["content-range"] == f"bytes 100-1099/{size}"
        assert part.content == full.content[100:1100]

        tail = browser.get(_path(url), headers={"Range": "bytes=-500"})
        assert tail.status_code == 206 and tail.content == full.content[-500:]

        tampered = browser.get(_path(url).replace("sig=", "sig=x"))
        assert tampered.status_code == 403 and tampered.json()["error"]["type"] == "permission_error"


def test_uploads_and_size_limits_through_nginx(stack: Stack) -> None:
    with stack.nginx.client(stack.key) as client:
        files = {"file": ("red.png", png_bytes((200, 0, 0)), "image/png")}
        uploaded = client.post("/v1/uploads/images", files=files)
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["url"].startswith(f"{PUBLIC}/files/uploads/")

        # Just over vidgate's 20 MiB: vidgate's own answer, naming the field.
        big = {"file": ("big.png", b"\x89PNG" + bytes(20 * 1024 * 1024), "image/png")}
        too_big = client.post("/v1/uploads/images", files=big)
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error"]["param"] == "file"

        # Over nginx's ceiling: nginx answers, in the same envelope.
        huge = {"file": ("huge.png", b"\x89PNG" + bytes(22 * 1024 * 1024), "image/png")}
        refused = client.post("/v1/uploads/images", files=huge)
        assert refused.status_code == 413, refused.text
        assert refused.headers["content-type"].startswith("application/json")
        assert refused.json()["error"] == {
            "code": 413,
            "message": "Request body too large",
            "type": "invalid_request_error",
            "param": None,
        }

        # A submit body over vidgate's 1 MiB is vidgate's 413, not nginx's.
        long_prompt = {"model": "pixverse-v6", "prompt": "x" * (1024 * 1024 + 10)}
        refused = client.post("/v1/videos/generations", json=long_prompt)
        assert refused.status_code == 413, refused.text
        assert "1048576" in refused.json()["error"]["message"]


def test_request_ids_metrics_and_load_balancing(stack: Stack) -> None:
    with stack.nginx.client(stack.key) as client:
        # The client's request id is kept; without one, nginx's $request_id is passed on.
        own = client.get("/v1/models", headers={"X-Request-Id": "order-42.retry:1"})
        assert own.headers["x-request-id"] == "order-42.retry:1"
        assigned = client.get("/v1/models")
        assert re.fullmatch(r"[0-9a-f]{32}", assigned.headers["x-request-id"]), assigned.headers

        # /metrics exists on the processes (VIDGATE_METRICS=true) but not through the proxy.
        hidden = client.get("/metrics")
        assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "not_found_error"
        direct = httpx.get(f"{stack.api[0].base}/metrics", timeout=10)
        assert direct.status_code == 200 and "vidgate_http_requests_total" in direct.text

        for _ in range(6):
            assert client.get("/v1/balance").status_code == 200
    served = set(stack.nginx.upstreams())
    assert {f"127.0.0.1:{s.port}" for s in stack.api} <= served, served

    # Plain http only redirects to https.
    redirect = httpx.get(f"http://127.0.0.1:{stack.nginx.http_port}/v1/models", timeout=10)
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "https://127.0.0.1/v1/models"


def test_unreachable_api_is_a_502_in_the_envelope(tmp_path: Path) -> None:
    nginx = start_nginx(tmp_path, [free_port(), free_port()])  # nothing listens there
    try:
        with nginx.client() as client:
            response = client.get("/v1/models")
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "bad_gateway"
    finally:
        nginx.stop()


def test_forwarded_headers_only_from_allowed_peers(stack: Stack, tmp_path: Path) -> None:
    """Without VIDGATE_PUBLIC_URL, links are built from the request: the scheme comes from
    X-Forwarded-Proto only when the peer is in VIDGATE_FORWARDED_ALLOW_IPS (here 127.0.0.2), so
    nobody else can make vidgate hand out https links for an http request, or the reverse."""
    server = Server(
        data_dir=stack.api[0].data_dir,
        port=free_port(),
        env={
            **stack.api[0].env,
            "VIDGATE_PUBLIC_URL": "",
            "VIDGATE_FORWARDED_ALLOW_IPS": "127.0.0.2",
            "VIDGATE_LOG_FORMAT": "json",
        },
        log=tmp_path / "serve.log",
        key=stack.key,
        extra_args=["--no-worker"],
    )
    server.start()
    try:
        answers = {}
        for source in ("127.0.0.2", "127.0.0.1"):
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(transport=transport, base_url=server.base, timeout=30) as client:
                uploaded = client.post(
                    "/v1/uploads/images",
                    headers={"Authorization": f"Bearer {stack.key}", "X-Forwarded-Proto": "https"},
                    files={"file": ("blue.png", png_bytes((0, 0, 200)), "image/png")},
                )
            assert uploaded.status_code == 200, uploaded.text
            answers[source] = uploaded.json()["url"]
        assert answers["127.0.0.2"].startswith(f"https://127.0.0.1:{server.port}/files/uploads/")
        assert answers["127.0.0.1"].startswith(f"http://127.0.0.1:{server.port}/files/uploads/")
    finally:
        server.stop()
    # With VIDGATE_LOG_FORMAT=json every line is JSON, uvicorn's own included (journald, jq).
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    assert any("Uvicorn running" in line for line in lines), lines
    for line in lines:
        assert json.loads(line)["level"], line
