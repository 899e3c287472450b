"""The one content-addressed store: verified reads, records written last and decoded strictly,
garbage collection by what callers keep."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from PIL import Image

from covergen.site.images import ImageDeriver
from covergen.store import Count, RecordError, Sha256, Store, decode, digest, dumps, loads
from covergen.store.results import ResultRecord, ResultStore


@dataclass(frozen=True)
class Part:
    name: str
    sha256: Sha256


@dataclass(frozen=True)
class Entry:
    size: Count
    ratio: float
    kind: Literal["a", "b"]
    parts: tuple[Part, ...]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def test_bytes_named_by_their_digest_round_trip_sharded(tmp_path: Path):
    store = Store(tmp_path)
    data = b"covergen"
    name = f"{digest(data)}.bin"
    assert store.put(name, data) == digest(data)
    assert store.path(name) == tmp_path / name[:2] / name and store.get(name) == data
    assert Store(tmp_path, sharded=False).path(name) == tmp_path / name


def test_damaged_bytes_are_detected_and_removed_unless_read_only(tmp_path: Path):
    data = b"covergen"
    name = f"{digest(data)}.bin"
    Store(tmp_path).put(name, data)
    path = Store(tmp_path).path(name)
    path.write_bytes(b"covergeN")
    assert Store(tmp_path, read_only=True).get(name) is None and path.exists()  # a dry run
    assert Store(tmp_path).get(name) is None and not path.exists()
    assert Store(tmp_path).get(name) is None  # absent


def test_an_entry_is_its_record_and_the_files_it_vouches_for(tmp_path: Path):
    store = Store(tmp_path)
    body = b"\x89PNG..."
    record = Part("k1.png", digest(body))
    store.put_entry("k1.json", dumps(record), {"k1.png": body})

    def read() -> Part | None:
        return store.get_entry("k1.json", Part, lambda r: {r.name: r.sha256})

    assert read() == record
    store.path("k1.png").write_bytes(b"\x89PNG!!!")  # one byte changed
    assert read() is None
    assert not store.path("k1.png").exists() and not store.path("k1.json").exists()


def test_a_failed_write_leaves_no_part_of_the_entry(tmp_path: Path, monkeypatch):
    import covergen.store

    real = covergen.store.write_bytes

    def full_at_the_record(path: Path, data: bytes) -> None:
        if path.suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(covergen.store, "write_bytes", full_at_the_record)
    store = Store(tmp_path)
    with pytest.raises(OSError):
        store.put_entry("k1.json", b"{}", {"k1.png": b"png", "k1-320.webp": b"webp"})
    assert list(store.files()) == []  # the image went with its record


def test_records_decode_strictly_naming_the_field():
    good = {"size": 3, "ratio": 1, "kind": "a", "parts": [{"name": "x", "sha256": "ab" * 32}]}
    entry = decode(Entry, good)
    assert entry.parts == (Part("x", "ab" * 32),) and entry.note == "" and entry.extra == {}
    assert loads(Entry, dumps(entry)) == entry
    refused = {
        "missing fields ['kind']": {k: v for k, v in good.items() if k != "kind"},
        "unknown fields ['colour']": {**good, "colour": "red"},
        "size is not a count": {**good, "size": -1},
        "size is not an integer": {**good, "size": True},
        "ratio is not a finite number": {**good, "ratio": float("nan")},
        "kind is not one of ['a', 'b']": {**good, "kind": "c"},
        "parts[0].sha256 is not a SHA-256": {**good, "parts": [{"name": "x", "sha256": "AB"}]},
        "parts is not a list": {**good, "parts": {}},
        "note is not text": {**good, "note": 5},
        "extra is not a mapping": {**good, "extra": []},
    }
    for message, value in refused.items():
        with pytest.raises(RecordError) as caught:
            decode(Entry, value)
        assert str(caught.value) == message
    with pytest.raises(RecordError, match=r"^ratio is not a finite number$"):
        decode(Entry, {**good, "ratio": 10**400})  # too large for a float: no OverflowError
    for data in (b"[]", b"{", b"\xff"):
        with pytest.raises(RecordError):
            loads(Entry, data)


def test_a_malformed_record_is_no_entry(tmp_path: Path):
    store = Store(tmp_path)
    store.put("k1.json", b'{"name": "x", "sha256": 5}')
    assert store.get_record("k1.json", Part) is None and not store.path("k1.json").exists()


def test_a_record_that_does_not_decode_takes_its_files_with_it(tmp_path: Path):
    store = Store(tmp_path)
    store.put("k1.png", b"png")
    store.put("k1-320.webp", b"webp")
    store.put("k2.png", b"another entry")
    store.put("k1.json", b'{"name": "k1.png"}')  # no sha256: it vouches for nothing

    assert store.get_entry("k1.json", Part, lambda r: {r.name: r.sha256}) is None
    assert [p.name for p in store.files()] == ["k2.png"]


def test_collect_keeps_what_is_kept_and_removes_the_rest(tmp_path: Path):
    store = Store(tmp_path)
    for key in ("aa11", "aa22", "bb33"):
        store.put(f"{key}.png", b"p")
        store.put(f"{key}-320.webp", b"w")
    (tmp_path / "style-vectors" / "aa").mkdir(parents=True)  # another store's folder beside
    (tmp_path / "style-vectors" / "aa" / "cc44.json").write_bytes(b"{}")
    leftover = tmp_path / "aa" / ".aa11.png.0123.tmp"
    leftover.write_bytes(b"being written")

    dry = store.collect({"aa11"}, dry_run=True)
    assert (dry.entries, dry.bytes) == (2, 4) and len(list(store.files())) == 6
    assert store.collect({"aa11"}).entries == 2
    assert list(store.keys()) == ["aa11"] and not (tmp_path / "bb").exists()
    assert (tmp_path / "style-vectors" / "aa" / "cc44.json").exists()
    assert leftover.exists()  # remove_leftovers sweeps it, under the lock


def test_result_store_refuses_a_record_of_another_key(tmp_path: Path):
    results = ResultStore(tmp_path)
    fields = dict(key="ab" * 32, pair="p", iterations=1, seconds=0.5, device="cpu", losses={},
                  params={}, photo_sha256="cd" * 32, cover_sha256="ef" * 32,
                  engine_version="1", weights="w")  # fmt: skip
    record = results.put(b"png", 1, 1, fields)
    assert results.get(record.key) == record and isinstance(record, ResultRecord)
    other = "12" * 32
    (tmp_path / "12").mkdir()
    results.image_path(record.key).with_suffix(".json").rename(tmp_path / "12" / f"{other}.json")
    assert results.get(other) is None and list(results.keys()) == [record.key]


def test_derived_images_are_verified_and_collected_by_key(tmp_path: Path):
    source = tmp_path / "photo.png"
    Image.new("RGB", (400, 300), (200, 40, 40)).save(source)
    sha = digest(source.read_bytes())
    deriver = ImageDeriver(tmp_path / "derived")
    derived = deriver.derive(sha, source)
    assert derived is not None and deriver.derive(sha, source) == derived  # from the cache
    painting = deriver.derive(sha, source, enlarge=True)
    assert painting is not None and painting.key != derived.key

    first = derived.variants[0].path
    first.write_bytes(b"damaged")
    again = deriver.derive(sha, source)  # derived anew, never the damaged file
    assert again is not None and first.read_bytes() != b"damaged"

    removed = deriver.collect({derived.key})
    assert removed.entries == 1 and all(v.path.exists() for v in derived.variants)
    assert not any(v.path.exists() for v in painting.variants)
