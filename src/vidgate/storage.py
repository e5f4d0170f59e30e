"""Where uploads and results live. `LocalStorage` keeps them under `VIDGATE_DATA_DIR/files`.

Keys are relative POSIX paths built by vidgate (`results/<task_id>/video.mp4`); `resolve()` refuses
anything that would leave the root, so a crafted key can never reach another file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Protocol


class Storage(Protocol):
    def put_file(self, key: str, source: Path) -> int: ...
    def put_bytes(self, key: str, data: bytes) -> int: ...
    def read_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def local_path(self, key: str) -> Path: ...
    def delete(self, key: str) -> None: ...


class InvalidKey(ValueError):
    pass


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def resolve(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if (
            not key
            or pure.is_absolute()
            or any(part in ("", ".", "..") for part in pure.parts)
            or "\\" in key
        ):
            raise InvalidKey(key)
        path = (self.root / pure).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey(key)
        return path

    def put_file(self, key: str, source: Path) -> int:
        """Move `source` into place atomically (a reader never sees half a file)."""
        target = self.resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target.stat().st_size

    def put_bytes(self, key: str, data: bytes) -> int:
        target = self.resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return len(data)

    def read_bytes(self, key: str) -> bytes:
        return self.resolve(key).read_bytes()

    def exists(self, key: str) -> bool:
        try:
            return self.resolve(key).is_file()
        except InvalidKey:
            return False

    def local_path(self, key: str) -> Path:
        return self.resolve(key)

    def delete(self, key: str) -> None:
        self.resolve(key).unlink(missing_ok=True)

    def scratch_dir(self) -> Path:
        """A directory on the same filesystem, so finished files are renamed, not copied."""
        path = self.root / ".scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path
