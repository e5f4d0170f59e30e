"""Where uploads and results live: a local directory (the default) or an S3-compatible bucket.

`VIDGATE_STORAGE_URL` picks the backend: empty keeps files under `VIDGATE_DATA_DIR/files`
(`LocalStorage`); `s3://bucket/prefix` keeps them in a bucket (`storage_s3.S3Storage`). Both
implement `Storage`, and both pass the same test suite (tests/test_storage.py).

Keys are relative POSIX paths built by vidgate (`results/<task_id>/video.mp4`). `check_key()`
refuses, on both backends, anything that could leave the root or reach vidgate's own hidden files:
empty, absolute, `.`/`..` or hidden components, backslashes, control characters.

Links to stored files, per backend (`Storage.url`):
- local: `/files/<key>?expires=&sig=` on this server, HMAC-signed (`signing.Signer`);
- S3: a presigned GET straight to the bucket, so video bytes never pass through vidgate.
Upload URLs are vidgate's signed `/files/` URLs on *both* backends (`storage_s3` says why).
"""

from __future__ import annotations

import functools
import mimetypes
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vidgate.config import Settings
    from vidgate.signing import Signer

#: Longest key accepted (S3 allows 1024 bytes; vidgate's own keys are far shorter).
MAX_KEY_LENGTH = 512
#: Backslashes and control characters.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


class InvalidKey(ValueError):
    pass


@functools.lru_cache(maxsize=16384)  # task views check the same keys on every poll
def check_key(key: str) -> str:
    """The key itself, or InvalidKey: the same rules for every backend."""
    if not key or len(key) > MAX_KEY_LENGTH or key[0] == "/" or _FORBIDDEN.search(key):
        raise InvalidKey(key)
    for part in key.split("/"):
        if not part or part[0] == ".":  # empty, `.`, `..` and hidden components
            raise InvalidKey(key)
    return key


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class Storage(Protocol):
    """What vidgate needs from a place to keep files. Every method may block: call it from a thread."""

    #: "local" or "s3".
    kind: str

    def put_file(self, key: str, source: Path) -> int:
        """Store a copy of `source` under `key` (atomically: readers never see half a file); its size."""
        ...

    def put_bytes(self, key: str, data: bytes) -> int: ...

    def read_bytes(self, key: str) -> bytes:
        """The stored bytes; FileNotFoundError when there is no such file."""
        ...

    def exists(self, key: str) -> bool:
        """False for a missing file and for an invalid key."""
        ...

    def size(self, key: str) -> int | None:
        """Bytes stored under `key`, None when there is no such file."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file; nothing happens when it is already gone."""
        ...

    def url(self, key: str, expires_at: int, base_url: str) -> str:
        """A link that downloads `key` without an API key (Range supported) until `expires_at`."""
        ...

    def own_key(self, url: str) -> str | None:
        """The key when `url` is a still-valid upload URL of ours, so workers read the bytes from
        storage instead of fetching them over HTTP; else None."""
        ...

    def local_file(self, key: str, workdir: Path) -> Path:
        """A local file holding the key's bytes: the stored file itself on local storage, a
        download into `workdir` on S3. FileNotFoundError when there is no such file."""
        ...

    def scratch_dir(self) -> Path:
        """A local directory for work in progress (renders, downloads); swept by `vidgate gc`."""
        ...


class LocalStorage:
    kind = "local"

    def __init__(self, root: Path, signer: Signer | None = None) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = signer

    def resolve(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidKey(key)
        return path

    def put_file(self, key: str, source: Path) -> int:
        target = self.resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The copy is made in the scratch directory (same filesystem, swept if a crash leaves it
        # behind) and renamed into place.
        fd, tmp = tempfile.mkstemp(dir=self.scratch_dir(), prefix="put-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target.stat().st_size

    def put_bytes(self, key: str, data: bytes) -> int:
        target = self.resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.scratch_dir(), prefix="put-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(data)

    def read_bytes(self, key: str) -> bytes:
        return self.resolve(key).read_bytes()

    def exists(self, key: str) -> bool:
        try:
            return self.resolve(key).is_file()
        except InvalidKey:
            return False

    def size(self, key: str) -> int | None:
        try:
            path = self.resolve(key)
            return path.stat().st_size if path.is_file() else None
        except (InvalidKey, FileNotFoundError):
            return None

    def local_path(self, key: str) -> Path:
        return self.resolve(key)

    def local_file(self, key: str, workdir: Path) -> Path:
        path = self.resolve(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path

    def delete(self, key: str) -> None:
        path = self.resolve(key)
        path.unlink(missing_ok=True)
        # Prune the directories the key made (`results/<task_id>/`), never a top-level one that a
        # concurrent writer may be creating a sibling in.
        parent = path.parent
        while parent != self.root and parent.parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def url(self, key: str, expires_at: int, base_url: str) -> str:
        """vidgate's signed `/files/` URL, served by `api/files.py` with HTTP Range."""
        check_key(key)
        if self.signer is None:
            raise RuntimeError("LocalStorage needs a Signer to make URLs")
        return self.signer.url(base_url, key, expires_at)

    def own_key(self, url: str) -> str | None:
        return None if self.signer is None else self.signer.own_key(url)

    def scratch_dir(self) -> Path:
        """A directory on the same filesystem, so finished files are renamed, not copied."""
        path = self.root / ".scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path


def open_storage(settings: Settings, signer: Signer | None = None) -> Storage:
    """The backend `settings.storage_url` names (the signer makes local and upload URLs)."""
    if not settings.storage_url:
        return LocalStorage(settings.files_dir, signer)
    from vidgate.storage_s3 import S3Storage

    return S3Storage.from_settings(settings, signer)
