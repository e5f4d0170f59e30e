"""Test harness for storage: an S3-compatible server and a vidgate app, both on loopback ports.

`s3_server()` runs moto's S3 in server mode (real HTTP, in a thread of the test process). moto
accepts presigned URLs without checking them, so `presign_guard` puts in front of it the checks AWS
makes (SigV4 query signature, `X-Amz-Date` + `X-Amz-Expires`), answering AWS's 403 otherwise: the
expiry and tampering tests then mean what they say.
"""

from __future__ import annotations

import calendar
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from vidgate import migrations
from vidgate.api import Gateway, create_app
from vidgate.config import Settings
from vidgate.db import Database

ACCESS_KEY = "vidgate-test"
SECRET_KEY = "vidgate-test-secret"
REGION = "us-east-1"


# --- an S3-compatible server on loopback ------------------------------------------------------------

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _refuse(start_response: Callable[..., Any], code: str, message: str) -> list[bytes]:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def presign_guard(app: Wsgi, secrets: dict[str, str]) -> Wsgi:
    """What AWS checks on a presigned URL and moto does not: signature, then expiry."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw_query = environ.get("QUERY_STRING", "")
        query = parse_qs(raw_query)
        if "X-Amz-Signature" not in query:
            return app(environ, start_response)
        access_key, date, region, service, _ = query["X-Amz-Credential"][0].split("/")
        if access_key not in secrets:
            return _refuse(start_response, "InvalidAccessKeyId", "unknown access key")
        stamp = query["X-Amz-Date"][0]
        if not stamp.startswith(date):
            return _refuse(start_response, "SignatureDoesNotMatch", "credential date is not the signing date")
        expires = int(query["X-Amz-Expires"][0])
        unsigned = "&".join(p for p in raw_query.split("&") if not p.startswith("X-Amz-Signature="))
        path = str(environ.get("RAW_URI") or environ["PATH_INFO"]).split("?")[0]
        request = AWSRequest(
            method=environ["REQUEST_METHOD"],
            url=f"http://{environ['HTTP_HOST']}{path}?{unsigned}",
            headers={"host": environ["HTTP_HOST"]},
        )
        request.context["timestamp"] = stamp
        signer = S3SigV4QueryAuth(Credentials(access_key, secrets[access_key]), service, region, expires)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != query["X-Amz-Signature"][0]:
            return _refuse(start_response, "SignatureDoesNotMatch", "signature does not match")
        signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
        if time.time() > signed_at + expires:
            return _refuse(start_response, "AccessDenied", "Request has expired")
        return app(environ, start_response)

    return guarded


@dataclass
class S3Server:
    endpoint: str
    port: int

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"vg-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, data_dir: Path, bucket: str, **extra: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "storage_url": f"s3://{bucket}/vg/media",
            "s3_endpoint_url": self.endpoint,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            "allow_private_urls": True,
            "poll_interval_seconds": 0.05,
            "lease_seconds": 5,
            "local_preset": "ultrafast",
            **extra,
        }
        return Settings(**values)


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 (server mode, real HTTP) on a free loopback port, in a thread of this process."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = presign_guard(DomainDispatcherApplication(create_backend_app), {ACCESS_KEY: SECRET_KEY})
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield S3Server(f"http://127.0.0.1:{server.server_port}", server.server_port)
    finally:
        server.shutdown()
        thread.join(timeout=10)


# --- a vidgate app on a real loopback port ------------------------------------------------------------


@contextmanager
def live_app(settings: Settings, *, worker: bool = False) -> Iterator[tuple[str, Gateway]]:
    """`create_app(settings)` served by uvicorn on 127.0.0.1: (base URL, its gateway)."""
    app = create_app(settings, run_worker=worker)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.gateway
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def migrated(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    migrations.upgrade(database)
    return database
