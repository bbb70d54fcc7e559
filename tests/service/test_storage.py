"""Artifact stores: a local directory and an S3 bucket on a local moto server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.storage import ArtifactNotFound, ArtifactStore, LocalStore, S3Store, check_key

from .helpers import S3_BUCKET


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "artifacts")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        yield S3Store(S3_BUCKET, f"storage-test/{uuid.uuid4().hex}", endpoint)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(b"\x01\x02" * 1_000_000)
    return path


def test_store_put_get_roundtrip(store: ArtifactStore, source: Path, tmp_path: Path) -> None:
    size = store.put_file("searches/abc/checkpoint.pt", source)
    target = tmp_path / "copy.bin"
    store.get_file("searches/abc/checkpoint.pt", target)
    assert size == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()


def test_store_streams_bytes(store: ArtifactStore, source: Path) -> None:
    store.put_file("searches/abc/checkpoint.pt", source)
    assert b"".join(store.iter_bytes("searches/abc/checkpoint.pt")) == source.read_bytes()
    assert store.size("searches/abc/checkpoint.pt") == source.stat().st_size


def test_store_missing_key_raises(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound):
        store.get_file("searches/none/state.pt", tmp_path / "x")
    with pytest.raises(ArtifactNotFound):
        store.size("searches/none/state.pt")


def test_store_delete_prefix(store: ArtifactStore, source: Path) -> None:
    store.put_file("searches/abc/genotype.json", source)
    store.put_file("searches/abd/genotype.json", source)
    store.delete_prefix("searches/abc")
    with pytest.raises(ArtifactNotFound):
        store.size("searches/abc/genotype.json")
    assert store.size("searches/abd/genotype.json") == source.stat().st_size


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "searches/../../x", "/abs", "searches//x", ".hidden", "a/./b", ""]
)
def test_store_rejects_escaping_key(store: ArtifactStore, source: Path, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_file(key, source)


def test_check_key_accepts_search_key() -> None:
    assert check_key("searches/0123abcd/checkpoint.pt") == "searches/0123abcd/checkpoint.pt"


def test_local_store_path_stays_inside_root(tmp_path: Path, source: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put_file("searches/a/genotype.json", source)
    path = store.local_path("searches/a/genotype.json")
    assert path is not None
    assert path.is_relative_to(tmp_path / "root")
