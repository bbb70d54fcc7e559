"""Artifact stores: a local directory, or an S3-compatible bucket shared by several machines.

Keys are built by the service from ids (`searches/<id>/<file>`), never taken from a request,
and every store still rejects a key that could leave its root.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ArtifactNotFound(LookupError):
    """The store has no object under the key."""


def check_key(key: str) -> str:
    """Return `key` unchanged, or raise ValueError when a part is empty, hidden or `..`."""
    parts = key.split("/")
    if not parts or any(not _KEY_PART.match(part) or part in {".", ".."} for part in parts):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


def search_key(search_id: str, filename: str) -> str:
    return check_key(f"searches/{search_id}/{filename}")


class ArtifactStore(Protocol):
    def put_file(self, key: str, path: Path) -> int:
        """Store the file at `path` under `key` and return its size in bytes."""
        ...

    def get_file(self, key: str, path: Path) -> None:
        """Write the object under `key` to `path`, atomically."""
        ...

    def size(self, key: str) -> int: ...

    def iter_bytes(self, key: str) -> Iterator[bytes]: ...

    def local_path(self, key: str) -> Path | None:
        """Return the object's file when the store is a local directory, else None."""
        ...

    def delete_prefix(self, prefix: str) -> None: ...


class LocalStore:
    """Objects as files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"invalid artifact key {key!r}")
        return path

    def put_file(self, key: str, path: Path) -> int:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            with path.open("rb") as source:
                shutil.copyfileobj(source, tmp, CHUNK_BYTES)
        os.replace(tmp.name, target)
        return target.stat().st_size

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ArtifactNotFound(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".download")
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key)
        return path.stat().st_size

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key)
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class S3Store:
    """Objects in an S3 bucket under a prefix; credentials come from boto3's usual sources."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> int:
        self.client.upload_file(str(path), self.bucket, self._key(key))
        return path.stat().st_size

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".download")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp))
        except self.client.exceptions.ClientError as error:
            if _is_missing(error):
                raise ArtifactNotFound(key) from error
            raise
        os.replace(tmp, path)

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as error:
            if _is_missing(error):
                raise ArtifactNotFound(key) from error
            raise
        return int(head["ContentLength"])

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey as error:
            raise ArtifactNotFound(key) from error
        body = response["Body"]
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()

    def local_path(self, key: str) -> Path | None:
        return None

    def delete_prefix(self, prefix: str) -> None:
        full = self._key(prefix.rstrip("/")) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})


def _is_missing(error: Any) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


def create_store(url: str, s3_endpoint_url: str | None = None) -> ArtifactStore:
    """Create the store that `url` names: a directory, `file://path` or `s3://bucket/prefix`."""
    if url.startswith("s3://"):
        parsed = urlparse(url)
        return S3Store(parsed.netloc, parsed.path, s3_endpoint_url)
    if url.startswith("file://"):
        return LocalStore(Path(urlparse(url).path))
    return LocalStore(Path(url))
