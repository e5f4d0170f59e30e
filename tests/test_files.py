"""Uploads and signed file URLs: formats, limits, range requests, tampering, expiry, traversal."""

from __future__ import annotations

import io
import time
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidgate.signing import Signer

from .conftest import png_bytes
from .test_api import assert_error


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_upload_detects_format_from_content(client: TestClient, fmt: str, content_type: str) -> None:
    data = png_bytes((10, 200, 30), fmt=fmt)
    # A misleading name and declared type: detection goes by the bytes.
    response = client.post("/v1/uploads/images", files={"file": ("photo.txt", data, "text/plain")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"url", "filename", "content_type", "bytes", "created_at"}
    assert body["content_type"] == content_type
    assert body["bytes"] == len(data)
    assert body["filename"] == "photo.txt"
    assert abs(body["created_at"] - time.time()) < 60
    downloaded = client.get(_path(body["url"]), headers={"Authorization": ""})
    assert downloaded.status_code == 200
    assert downloaded.content == data


def test_upload_url_lives_72_hours(client: TestClient) -> None:
    body = client.post("/v1/uploads/images", files={"file": ("a.png", png_bytes((1, 2, 3)))}).json()
    expires = int(dict(p.split("=") for p in urlsplit(body["url"]).query.split("&"))["expires"])
    assert expires - body["created_at"] == pytest.approx(72 * 3600, abs=2)


def test_upload_errors(client: TestClient) -> None:
    not_image = client.post("/v1/uploads/images", files={"file": ("a.png", b"%PDF-1.7 not an image")})
    assert "pdf" in assert_error(not_image, 400, "invalid_request_error", "file")["message"].lower()
    missing = client.post("/v1/uploads/images", files={"other": ("a.png", png_bytes((1, 2, 3)))})
    assert_error(missing, 400, "invalid_request_error", "file")
    big = io.BytesIO()
    Image.new("RGB", (16, 16)).save(big, format="PNG")
    payload = big.getvalue() + b"\0" * (20 * 1024 * 1024)
    assert_error(
        client.post("/v1/uploads/images", files={"file": ("big.png", payload)}),
        413,
        "invalid_request_error",
        "file",
    )
    assert_error(
        client.post(
            "/v1/uploads/images",
            files={"file": ("a.png", png_bytes((1, 2, 3)))},
            headers={"Authorization": "Bearer wrong"},
        ),
        401,
        "authentication_error",
    )


def test_signed_urls_refuse_tampering_and_expiry(client: TestClient) -> None:
    url = client.post("/v1/uploads/images", files={"file": ("a.png", png_bytes((1, 2, 3)))}).json()["url"]
    path = _path(url)
    assert client.get(path).status_code == 200
    tampered_sig = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert_error(client.get(tampered_sig), 403, "permission_error")
    longer = path.replace("expires=", "expires=9")
    assert_error(client.get(longer), 403, "permission_error")
    other_file = path.replace("/files/uploads/", "/files/uploads/x")
    assert_error(client.get(other_file), 403, "permission_error")
    assert_error(client.get(path.split("?")[0]), 403, "permission_error")

    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    signer: Signer = gateway.signer
    key = urlsplit(url).path.removeprefix("/files/")
    expired = signer.url("", key, int(time.time()) - 5)
    assert_error(client.get(expired), 410, "invalid_request_error")
    for evil in ("../data/vidgate.db", "uploads/../../vidgate.db", "/etc/passwd"):
        forged = signer.url("", evil, int(time.time()) + 60)
        assert client.get(forged).status_code in (403, 404)
        assert b"SQLite" not in client.get(forged).content


def test_range_requests_for_seeking(client: TestClient) -> None:
    data = png_bytes((200, 0, 0), size=(400, 300))
    path = _path(client.post("/v1/uploads/images", files={"file": ("a.png", data)}).json()["url"])
    part = client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = client.get(path, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    head = client.head(path)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert head.headers["accept-ranges"] == "bytes"
    unsatisfiable = client.get(path, headers={"Range": f"bytes={len(data) + 10}-"})
    assert unsatisfiable.status_code == 416
