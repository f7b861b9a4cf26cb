"""The rig's file store hashes what it serves: a file fetched in order from the start has its SHA-256 without
being read a second time, so a quick listing (no checksums computed) lets a transfer start at once; a file
served out of order, or changed while it was served, never gets a checksum from the served bytes."""

import hashlib
import os
import zlib

import xxhash
from helpers import run

from transports.zmq.file_store import FileStore
from transports.zmq.files import DEFAULT_CHUNK


def make_store(tmp_path, size=3 * DEFAULT_CHUNK + 12345):
    root = tmp_path / "rig"
    (root / "s").mkdir(parents=True)
    data = os.urandom(size)
    (root / "s" / "a.bin").write_bytes(data)
    return FileStore(root), root / "s" / "a.bin", data


async def fetch_all(store, offsets, chunk=DEFAULT_CHUNK):
    out = {}
    for offset in offsets:
        value, blob = await store.handle("FETCH", {"path": "s/a.bin", "offset": offset, "length": chunk,
                                                   "crc": False})
        assert value["crc32"] is None
        out[offset] = bytes(blob)
    return out


def quick_sha(store):
    [item] = store.list_files("s", hashes=False)
    return item["sha256"]


def test_a_file_served_in_order_has_its_checksum_from_the_served_bytes(tmp_path, monkeypatch):
    store, path, data = make_store(tmp_path)
    assert quick_sha(store) is None  # nothing computed yet: the quick listing does not hash

    async def main():
        return await fetch_all(store, range(0, len(data), DEFAULT_CHUNK))

    chunks = run(main())
    assert b"".join(chunks[o] for o in sorted(chunks)) == data
    # the listing now knows it without reading the file again
    monkeypatch.setattr("transports.zmq.file_store.file_digests", lambda *a: (_ for _ in ()).throw(AssertionError))
    assert quick_sha(store) == hashlib.sha256(data).hexdigest()
    [listed] = store.list_files("s")
    assert listed["sha256"] == hashlib.sha256(data).hexdigest()
    assert listed["xxh128"] == xxhash.xxh3_128(data).hexdigest()  # what the console checks its copy with
    assert store._serving == {}  # served whole: closed


def test_a_file_served_out_of_order_or_changed_meanwhile_is_hashed_from_disk(tmp_path):
    store, path, data = make_store(tmp_path)

    async def out_of_order():
        return await fetch_all(store, [DEFAULT_CHUNK, 0, 2 * DEFAULT_CHUNK, 3 * DEFAULT_CHUNK])

    run(out_of_order())
    assert quick_sha(store) is None
    [listed] = store.list_files("s")  # computed from disk
    assert listed["sha256"] == hashlib.sha256(data).hexdigest()
    assert listed["xxh128"] == xxhash.xxh3_128(data).hexdigest()

    store2, path2, data2 = make_store(tmp_path / "two")

    async def changed_while_served():
        await fetch_all(store2, [0])
        changed = bytes(255 - b for b in data2[:100]) + data2[100:]
        path2.write_bytes(changed)  # same size, rewritten: another modification time
        await fetch_all(store2, range(DEFAULT_CHUNK, len(data2), DEFAULT_CHUNK))
        return changed

    changed = run(changed_while_served())
    assert quick_sha(store2) is None  # the served bytes mix two versions: no checksum from them
    assert store2.list_files("s")[0]["sha256"] == hashlib.sha256(changed).hexdigest()


def test_pieces_crcs_and_bad_requests(tmp_path):
    store, path, data = make_store(tmp_path)

    async def main():
        value, blob = await store.handle("FETCH", {"path": "s/a.bin", "offset": 0, "length": len(data),
                                                   "crcs": DEFAULT_CHUNK})
        errors = []
        for bad in ({"path": "s/a.bin", "offset": 0, "length": len(data), "crcs": 10},
                    {"path": "../x", "offset": 0, "length": 10},
                    {"path": 5, "offset": 0, "length": 10},
                    {"path": "s/a.bin", "offset": -1, "length": 10}):
            try:
                await store.handle("FETCH", bad)
            except ValueError as ex:
                errors.append(str(ex))
        return value, blob, errors

    value, blob, errors = run(main())
    assert blob is None and value["size"] == len(data)
    assert value["crcs"] == [zlib.crc32(data[o:o + DEFAULT_CHUNK]) for o in range(0, len(data), DEFAULT_CHUNK)]
    assert len(errors) == 4 and "CRC pieces must be" in errors[0] and "must be relative" in errors[1]


def test_a_quick_listing_hashes_small_files_at_once(tmp_path):
    # a folder of images: asking for each one's checksum after fetching it would cost a round trip per file
    store, _, big = make_store(tmp_path)
    frames = {f"s/frames/{i:04d}.png": os.urandom(1000 + i) for i in range(50)}
    for rel, data in frames.items():
        (tmp_path / "rig" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rig" / rel).write_bytes(data)
    listed = {item["path"]: item["sha256"] for item in store.list_files("s", hashes=False)}
    assert listed.pop("s/a.bin") is None  # the big one: hashed as it is served
    assert listed == {rel: hashlib.sha256(data).hexdigest() for rel, data in frames.items()}
