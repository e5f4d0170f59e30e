"""One storage suite, run on both backends: a local directory and S3 (moto's S3 server on loopback).

Every URL is fetched over real HTTP without an API key, as a browser `<video>` would: the local
backend's through a vidgate app served by uvicorn, the S3 backend's presigned URLs from the S3
server itself, which refuses tampered and expired ones as AWS does (see storage_harness.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from vidgate import keys
from vidgate.api import Gateway, create_app
from vidgate.config import Settings
from vidgate.storage import InvalidKey, Storage
from vidgate.storage_s3 import MAX_PRESIGN_SECONDS, S3Storage, parse_storage_url

from .conftest import auth, png_bytes, wait_finished
from .e2e.conftest import probe
from .storage_harness import S3Server, live_app, migrated, s3_server

EVIL_KEYS = [
    "../outside.txt",
    "uploads/../../outside.txt",
    "/etc/passwd",
    "uploads\\..\\x",
    "",
    ".",
    "uploads/./x",
    ".scratch/x",
    "uploads//x",
    "a/\x00b",
]


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@dataclass
class Backend:
    kind: str
    base: str
    gateway: Gateway
    api_key: str

    @property
    def storage(self) -> Storage:
        return self.gateway.storage

    def key(self, name: str = "video.mp4") -> str:
        return f"results/task_{uuid.uuid4().hex[:10]}/{name}"


@pytest.fixture(scope="module", params=["local", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, s3: S3Server
) -> Iterator[Backend]:
    data_dir = tmp_path_factory.mktemp(f"storage-{request.param}") / "data"
    if request.param == "s3":
        settings = s3.settings(data_dir, s3.new_bucket())
    else:
        settings = Settings(data_dir=data_dir)
    database = migrated(settings)
    api_key = keys.create(database, "storage")[1]
    with live_app(settings) as (base, gateway):
        assert gateway.storage.kind == request.param
        yield Backend(request.param, base, gateway, api_key)
    database.dispose()


DATA = bytes(range(256)) * 40


def _get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=30)


# --- the suite ------------------------------------------------------------------------------------------


def test_put_read_exists_size_delete(backend: Backend, tmp_path: Path) -> None:
    storage, key = backend.storage, backend.key("clip.bin")
    assert not storage.exists(key) and storage.size(key) is None
    assert storage.put_bytes(key, DATA) == len(DATA)
    assert storage.exists(key) and storage.size(key) == len(DATA)
    assert storage.read_bytes(key) == DATA
    source = tmp_path / "source.bin"
    source.write_bytes(DATA[::-1])
    assert storage.put_file(key, source) == len(DATA)  # replaces
    assert storage.read_bytes(key) == DATA[::-1]
    copy = storage.local_file(key, tmp_path / "work")
    assert copy.read_bytes() == DATA[::-1]
    storage.delete(key)
    storage.delete(key)  # already gone: nothing happens
    assert not storage.exists(key) and storage.size(key) is None
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(key)
    with pytest.raises(FileNotFoundError):
        storage.local_file(key, tmp_path / "work")


@pytest.mark.parametrize("evil", EVIL_KEYS)
def test_keys_that_traverse_are_refused(backend: Backend, evil: str) -> None:
    storage = backend.storage
    for action in (
        lambda: storage.put_bytes(evil, b"x"),
        lambda: storage.read_bytes(evil),
        lambda: storage.delete(evil),
        lambda: storage.url(evil, int(time.time()) + 60, backend.base),
    ):
        with pytest.raises(InvalidKey):
            action()
    assert not storage.exists(evil) and storage.size(evil) is None
    if isinstance(storage, S3Storage):
        listed = storage.client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])
        assert all(item["Key"].startswith("vg/media/") for item in listed)


def test_url_downloads_without_api_key(backend: Backend) -> None:
    storage, key = backend.storage, backend.key()
    storage.put_bytes(key, DATA)
    url = storage.url(key, int(time.time()) + 600, backend.base)
    if backend.kind == "s3":
        assert url.startswith(f"{backend.gateway.settings.s3_endpoint_url}/") and "X-Amz-Signature" in url
    else:
        assert url.startswith(f"{backend.base}/files/results/")
    response = _get(url)
    assert response.status_code == 200, response.text
    assert response.content == DATA
    assert response.headers["content-type"] == "video/mp4"  # a <video> tag plays it


def test_range_requests(backend: Backend) -> None:
    storage, key = backend.storage, backend.key()
    storage.put_bytes(key, DATA)
    url = storage.url(key, int(time.time()) + 600, backend.base)
    part = _get(url, Range="bytes=10-19")
    assert part.status_code == 206
    assert part.content == DATA[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
    tail = _get(url, Range="bytes=-5")
    assert tail.status_code == 206 and tail.content == DATA[-5:]
    assert _get(url, Range=f"bytes={len(DATA) + 10}-").status_code == 416


def test_past_expiry_is_refused(backend: Backend) -> None:
    storage, key = backend.storage, backend.key()
    storage.put_bytes(key, DATA)
    response = _get(storage.url(key, int(time.time()) - 5, backend.base))
    assert response.status_code == (403 if backend.kind == "s3" else 410)
    assert DATA[:100] not in response.content


def test_url_stops_working_at_its_expiry(backend: Backend) -> None:
    storage, key = backend.storage, backend.key()
    storage.put_bytes(key, DATA)
    expires_at = int(time.time()) + 2
    url = storage.url(key, expires_at, backend.base)
    assert _get(url).status_code == 200
    time.sleep(max(0.0, expires_at + 1.2 - time.time()))
    response = _get(url)
    assert response.status_code == (403 if backend.kind == "s3" else 410)
    if backend.kind == "s3":
        assert "expired" in response.text


def test_tampered_url_is_refused(backend: Backend) -> None:
    storage, key = backend.storage, backend.key()
    other = backend.key()
    storage.put_bytes(key, DATA)
    storage.put_bytes(other, b"secret" * 10)
    url = storage.url(key, int(time.time()) + 600, backend.base)
    marker = "X-Amz-Signature=" if backend.kind == "s3" else "sig="
    head, _, sig = url.partition(marker)
    forged_sig = head + marker + ("0" if sig[0] != "0" else "1") + sig[1:]
    other_file = url.replace(key.split("/")[1], other.split("/")[1])
    for forged in (forged_sig, other_file):
        response = _get(forged)
        assert response.status_code == 403, forged
        assert b"secret" not in response.content


def test_upload_urls_are_ours_and_served_with_ranges(backend: Backend) -> None:
    """Uploads go to the backend and come back as vidgate's signed `/files/` URL on both."""
    image = png_bytes((20, 200, 90), size=(300, 200))
    response = httpx.post(
        f"{backend.base}/v1/uploads/images",
        files={"file": ("ref.png", image, "image/png")},
        headers=auth(backend.api_key),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    url = response.json()["url"]
    assert urlsplit(url).path.startswith("/files/uploads/upl_")
    key = backend.storage.own_key(url)
    assert key is not None and backend.storage.read_bytes(key) == image
    if isinstance(backend.storage, S3Storage):  # stored in the bucket, not on local disk
        head = backend.storage.client.head_object(Bucket=backend.storage.bucket, Key=f"vg/media/{key}")
        assert head["ContentType"] == "image/png"
    assert _get(url).content == image
    part = _get(url, Range="bytes=10-19")
    assert part.status_code == 206 and part.content == image[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(image)}"
    head_response = httpx.head(url, timeout=30)
    assert head_response.status_code == 200
    assert int(head_response.headers["content-length"]) == len(image)
    assert _get(url, Range=f"bytes={len(image) + 10}-").status_code == 416
    # Not ours: a tampered signature, an expired link, a result link, another server's URL.
    assert backend.storage.own_key(url.replace("sig=", "sig=x")) is None
    expired = backend.gateway.signer.url(backend.base, key, int(time.time()) - 1)
    assert backend.storage.own_key(expired) is None
    assert _get(expired).status_code == 410
    result_key = backend.key()
    backend.storage.put_bytes(result_key, DATA)
    result_link = backend.storage.url(result_key, int(time.time()) + 60, backend.base)
    assert backend.storage.own_key(result_link) == (result_key if backend.kind == "local" else None)
    assert backend.storage.own_key("https://example.com/files/uploads/x.png") is None


# --- S3 specifics ---------------------------------------------------------------------------------------


def _s3(tmp_path: Path, s3: S3Server, **extra: Any) -> S3Storage:
    storage = S3Storage.from_settings(s3.settings(tmp_path / "data", s3.new_bucket(), **extra))
    assert isinstance(storage, S3Storage)
    return storage


def test_presigned_expiry_follows_expires_at_capped_at_seven_days(tmp_path: Path, s3: S3Server) -> None:
    storage = _s3(tmp_path, s3)
    now = int(time.time())

    def expires_in(url: str) -> int:
        return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])

    assert abs(expires_in(storage.url("results/a/video.mp4", now + 3600, "")) - 3600) <= 2
    assert expires_in(storage.url("results/a/video.mp4", now + 30 * 86400, "")) == MAX_PRESIGN_SECONDS
    assert expires_in(storage.url("results/a/video.mp4", now - 100, "")) == 0
    # Polls within a minute get the same link (signing is not free; browsers can cache).
    assert storage.url("results/a/video.mp4", now + 3600, "") == storage.url(
        "results/a/video.mp4", now + 3600, ""
    )


def test_public_endpoint_names_the_links(tmp_path: Path, s3: S3Server) -> None:
    """Clients may reach S3 by another name than vidgate does: links are signed for that name."""
    storage = _s3(tmp_path, s3, s3_public_endpoint_url=f"http://localhost:{s3.port}")
    storage.put_bytes("results/b/video.mp4", DATA)
    url = storage.url("results/b/video.mp4", int(time.time()) + 60, "")
    assert url.startswith(f"http://localhost:{s3.port}/")
    response = _get(url.replace("localhost", "127.0.0.1"))
    assert response.status_code == 403  # signed for the public host, not the internal one
    assert _get(url).content == DATA


def test_storage_urls_are_validated(tmp_path: Path) -> None:
    assert parse_storage_url("s3://bucket") == ("bucket", "")
    assert parse_storage_url("s3://bucket/a/b/") == ("bucket", "a/b")
    for bad in ("s3://", "s3:///prefix", "s3://bucket/../x", "file:///tmp/x"):
        with pytest.raises(ValueError):
            parse_storage_url(bad)
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, storage_url="ftp://example.com/x")


# --- end to end on S3 ------------------------------------------------------------------------------------


def _submit(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/v1/videos/generations", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["task_id"])


@pytest.mark.slow
def test_end_to_end_on_s3(tmp_path: Path, s3: S3Server) -> None:
    """Upload, image-to-video, extension: inputs read from the bucket, results stored there, and
    the result links download from the S3 server and probe as MP4 files."""
    bucket = s3.new_bucket()
    settings = s3.settings(tmp_path / "data", bucket)
    database = migrated(settings)
    api_key = keys.create(database, "e2e")[1]
    with TestClient(create_app(settings, run_worker=True), headers=auth(api_key)) as client:
        upload = client.post("/v1/uploads/images", files={"file": ("ref.png", png_bytes((250, 120, 0)))})
        # The TestClient's host is not reachable over HTTP: the worker must read it from S3.
        image_url = upload.json()["url"]
        first = _submit(
            client,
            {
                "model": "pixverse-v6",
                "prompt": "an orange square drifting",
                "image_urls": [image_url],
                "duration": 1,
                "resolution": "360p",
            },
        )
        data = wait_finished(client, first)
        assert data["status"] == "completed", data
        video_url = data["result"]["videos"][0]["url"][0]
        assert video_url.startswith(f"{s3.endpoint}/{bucket}/vg/media/results/{first}/video.mp4?")
        response = httpx.get(video_url, timeout=30)  # no API key, like a browser
        assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
        (tmp_path / "video.mp4").write_bytes(response.content)
        facts = probe(tmp_path / "video.mp4")
        assert facts.codec == "h264" and facts.frames > 0
        video = data["result"]["videos"][0]
        assert (facts.width, facts.height) == (video["width"], video["height"])
        part = httpx.get(video_url, headers={"Range": "bytes=0-7"}, timeout=30)
        assert part.status_code == 206 and part.content[4:8] == b"ftyp"
        thumb = httpx.get(data["result"]["thumbnail_url"], timeout=30)
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"

        # Extension reads the source video back from the bucket.
        second = _submit(
            client,
            {"model": "pixverse-v6", "prompt": "and on", "extend_from_task_id": first, "duration": 1},
        )
        extended = wait_finished(client, second)
        assert extended["status"] == "completed", extended
        assert httpx.get(extended["result"]["videos"][0]["url"][0], timeout=30).status_code == 200
    # Nothing was kept on local disk but scratch (emptied) and the database.
    assert not (settings.data_dir / "files").exists()
    scratch = settings.data_dir / "scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    database.dispose()
