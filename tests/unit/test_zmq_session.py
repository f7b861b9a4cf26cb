"""A whole session over zmq:// with the session engine (core.session.Session over ZmqLinks to real RigService
rigs behind real ROUTER sockets), then the rigs' session files fetched into the console's session folder;
and file transfer on its own: corrupted chunks re-asked, a corrupt partial file discarded, resume, progress."""

import hashlib
import json

import pytest
import xxhash
from helpers import run, wait_until
from zmq_helpers import FaultProxy, make_link, start_rig

from core.config import parse_rig
from core.link import RemoteError
from core.protocol import ExpMessage
from core.rig_config import parse_rig_config
from core.service import RigService
from core.session import Phase, Session
from transports import registry
from transports.registry import TRANSPORTS
from transports.zmq import RemoteFile, TransferError, serve_zmq
from transports.zmq.files import MARK_NAME, PART_SUFFIX, fetch_file, fetch_verified, list_files


async def start_service_rig(tmp_path, name, main_sync=False):
    config = parse_rig_config({"name": name, "uris": ["zmq://127.0.0.1:0"], "main_sync": main_sync,
                               "drivers": {"recorders": {"left": {"kind": "camera", "rate": 100}}}}, TRANSPORTS,
                              base_dir=tmp_path).with_data_dir(tmp_path / "rigs" / name)
    service = RigService.from_config(config)
    await service.start()
    server = await serve_zmq(config.listen[0].address, service, {})
    return service, server


def test_full_session_over_zmq_then_files_fetched_into_the_session_folder(tmp_path):
    async def main():
        rigs = {name: await start_service_rig(tmp_path, name, main_sync=(name == "sync"))
                for name in ("sync", "cams", "ephys")}
        specs = {name: parse_rig(name, {"uri": f"zmq://127.0.0.1:{server.port}", "timeout": 5}, TRANSPORTS)
                 for name, (_, server) in rigs.items()}
        links = {name: registry.make_link(spec) for name, spec in specs.items()}
        for link in links.values():
            await link.connect()
        session = Session(links, specs, subject="KS001", data_dir=tmp_path / "console", main_sync="sync")
        await session.open()
        steps = [await session.info(), await session.init(), await session.start()]
        # live state over the stream, no polling: frame counters move while running
        await wait_until(lambda: all((session.state.get(["rigs", n, "service", "recorders", "left", "frames"]) or 0)
                                     > 5 for n in links), timeout=5)
        steps.append(await session.stop())
        assert session.phase is Phase.STOPPED
        statuses = {n: session.state.get(["rigs", n, "status"]) for n in links}
        progress = []
        fetched = {}
        for name, link in links.items():
            exp_ref = session.exp_ref
            files = await link.list_files(prefix="KS001")
            fetched[name] = await link.fetch_files(session.folder / "rigs" / name, files,
                                                   progress=lambda p, got, size: progress.append((p, got, size)))
        steps.append(await session.cleanup())
        await session.close()
        for link in links.values():
            await link.close()
        for service, server in rigs.values():
            await server.close()
            await service.close()
        return steps, statuses, fetched, progress, exp_ref, session.folder

    steps, statuses, fetched, progress, exp_ref, folder = run(main(), timeout=60)
    assert [s.ok for s in steps] == [True] * 5, [(s.step, s.error, s.failed) for s in steps]
    assert statuses == {"sync": 30, "cams": 30, "ephys": 30}
    assert exp_ref.endswith("_1_KS001")
    for name, paths in fetched.items():
        assert paths and all(p.is_file() and folder in p.parents for p in paths)
        for path in paths:
            original = tmp_path / "rigs" / name / path.relative_to(folder / "rigs" / name)
            assert path.read_bytes() == original.read_bytes()
    assert progress and all(got <= size for _, got, size in progress)


def make_data(tmp_path, size=300_000):
    root = tmp_path / "rigdata"
    (root / "s").mkdir(parents=True)
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    (root / "s" / "big.bin").write_bytes(data)
    return root, data


def test_corrupted_chunks_are_detected_and_asked_for_again(tmp_path):
    root, data = make_data(tmp_path)

    async def main():
        rig, server = await start_rig(options={"data_dir": str(root)})
        proxy = await FaultProxy(server.port, corrupt=0.3, seed=5).start()
        link = make_link(proxy.port)
        await link.connect()
        seen = []
        paths = await link.fetch_files(tmp_path / "out", prefix="s", chunk_size=16_384,
                                       progress=lambda p, got, size: seen.append(got))
        corrupted = proxy.counts["down_corrupted"]
        await link.close()
        await proxy.close()
        await server.close()
        return paths, seen, corrupted

    paths, seen, corrupted = run(main())
    assert corrupted >= 3
    assert paths[0].read_bytes() == data and not paths[0].with_name("big.bin" + PART_SUFFIX).exists()
    assert seen == sorted(seen) and seen[-1] == len(data)  # progress only ever grows, ends at the size


class DamagesOneChunk:
    """A requester over a real link that damages one chunk the first time it is sent (a bad piece of memory
    or a disk on the way), and counts the bytes that came over the wire."""

    def __init__(self, link, offset):
        self.link, self.offset, self.damaged, self.bytes = link, offset, 0, 0

    async def __call__(self, key, value):
        reply, blob = await self.link._file_request(key, value)
        if key == "FETCH" and blob:
            self.bytes += len(blob)
            if value["offset"] == self.offset and not self.damaged:
                self.damaged += 1
                blob = bytes(blob[:100]) + bytes([blob[100] ^ 0x01]) + bytes(blob[101:])
        return reply, blob


class EarlierRig(DamagesOneChunk):
    """The same, to a rig of an earlier RigDeck: its listings give no XXH3-128 (copies are checked by SHA-256)."""

    async def __call__(self, key, value):
        reply, blob = await super().__call__(key, value)
        if key == "FILES":
            reply = {"files": [{k: v for k, v in item.items() if k != "xxh128"} for item in reply["files"]]}
        return reply, blob


@pytest.mark.parametrize("kind", [DamagesOneChunk, EarlierRig])
def test_a_damaged_chunk_is_found_and_only_that_chunk_is_fetched_again(tmp_path, kind):
    root, data = make_data(tmp_path)
    chunk = 32_768

    async def main():
        rig, server = await start_rig(options={"data_dir": str(root)})
        link = make_link(server.port)
        await link.connect()
        damaging = kind(link, offset=3 * chunk)
        [remote] = await list_files(damaging, "s", hashes=False)
        dest = tmp_path / "out" / "big.bin"
        verified = await fetch_verified(damaging, remote, dest, chunk_size=chunk)
        # an intact copy already in place is recognised by its checksum, and not fetched again
        again = kind(link, offset=-1)
        await fetch_file(again, verified, dest, chunk_size=chunk)
        await link.close()
        await server.close()
        return dest.read_bytes(), damaging, verified, again

    got, damaging, verified, again = run(main())
    assert got == data and damaging.damaged == 1
    assert damaging.bytes == len(data) + chunk and again.bytes == 0  # the file once, then the damaged piece alone
    assert verified.sha256 == hashlib.sha256(data).hexdigest()
    assert verified.xxh128 == ("" if kind is EarlierRig else xxhash.xxh3_128(data).hexdigest())


def test_a_copy_matches_by_xxh128_when_the_rig_gives_one_else_by_sha256():
    both = RemoteFile("s/a.bin", 3, "s" * 64, 0.0, "x" * 32)
    assert both.matches("x" * 32) and not both.matches("y" * 32, sha256="s" * 64)
    earlier = RemoteFile("s/a.bin", 3, "s" * 64)
    assert earlier.matches("", sha256="s" * 64) and not earlier.matches("x" * 32)
    assert not RemoteFile("s/a.bin", 3, "").matches("", "")  # nothing known: never a match


class FlakyRig:
    """A requester over a real link that cuts the transfer after ``cut`` chunks (a dropped connection)."""

    def __init__(self, link, cut):
        self.link, self.cut, self.calls = link, cut, 0

    async def __call__(self, key, value):
        self.calls += 1
        if key == "FETCH" and self.calls > self.cut:
            raise ConnectionError("link lost mid-transfer")
        return await self.link._file_request(key, value)


def test_interrupted_transfer_resumes_and_a_corrupt_partial_file_is_refetched(tmp_path):
    root, data = make_data(tmp_path)

    async def main():
        rig, server = await start_rig(options={"data_dir": str(root)})
        link = make_link(server.port)
        await link.connect()
        [remote] = await link.list_files("s")
        assert remote == RemoteFile("s/big.bin", len(data), hashlib.sha256(data).hexdigest(), remote.mtime,
                                    xxhash.xxh3_128(data).hexdigest())
        dest = tmp_path / "out" / "big.bin"
        part = dest.with_name(dest.name + PART_SUFFIX)
        with pytest.raises(ConnectionError):
            await fetch_file(FlakyRig(link, cut=4), remote, dest, chunk_size=32_768)
        assert part.stat().st_size == 4 * 32_768 and not dest.exists()  # what arrived is kept
        seen = []
        await fetch_file(link._file_request, remote, dest, lambda p, got, size: seen.append(got), chunk_size=32_768)
        resumed_from = seen[0]  # the first report says where it resumed
        assert dest.read_bytes() == data
        # a partial file that is not a prefix of the rig's file (bit rot, a different file): detected by the
        # whole-file SHA-256, thrown away, fetched again from zero
        dest.unlink()
        part.write_bytes(b"\x00" * 50_000)
        await fetch_file(link._file_request, remote, dest, chunk_size=65_536)
        ok_after_corrupt_part = dest.read_bytes() == data
        # a file that keeps coming back wrong is an error after the attempts, not a hang or a bad file
        dest.unlink()
        bad = RemoteFile(remote.path, remote.size, "0" * 64)
        with pytest.raises(TransferError, match="changed on the rig after it was listed"):
            await fetch_file(link._file_request, bad, dest, chunk_size=65_536, attempts=2)
        await link.close()
        await server.close()
        return resumed_from, ok_after_corrupt_part, dest.exists()

    resumed_from, ok_after_corrupt_part, exists = run(main())
    assert resumed_from == 4 * 32_768 and ok_after_corrupt_part and not exists


def test_the_rig_serves_nothing_outside_its_data_folder(tmp_path):
    root, _ = make_data(tmp_path)
    (tmp_path / "secret.txt").write_text("no")
    (root / "s" / "link").symlink_to(tmp_path / "secret.txt")

    async def main():
        rig, server = await start_rig(options={"data_dir": str(root)})
        link = make_link(server.port)
        await link.connect()
        listed = [f.path for f in await link.list_files()]
        errors = []
        for path in ("../secret.txt", "/etc/passwd", "s/link", "s/../../secret.txt"):
            try:
                await link._file_request("FETCH", {"path": path, "offset": 0, "length": 10})
            except Exception as ex:  # noqa: BLE001 - the text is what we check
                errors.append(str(ex))
        await link.close()
        await server.close()
        return listed, errors

    listed, errors = run(main())
    assert listed == ["s/big.bin"] and len(errors) == 4
    assert all("FileAccessError" in e for e in errors), errors


def test_a_files_only_endpoint_serves_files_refuses_commands_and_marks_what_was_verified(tmp_path):
    root, data = make_data(tmp_path)
    (root / "s" / "small.txt").write_text("hello")

    async def main():
        rig, server = await start_rig(options={"data_dir": str(root), "files_only": True})
        link = make_link(server.port, stream=False)
        await link.connect()
        files = await link.list_files("s")
        refused = None
        try:
            await link.request(ExpMessage.EXPSTATUS, timeout=2)
        except RemoteError as ex:
            refused = str(ex)
        changed = RemoteFile("s/small.txt", 5, "0" * 64)
        reply = await link.mark_transferred("s", [files[0], changed])
        outside = None
        try:
            await link.mark_transferred("t", files)
        except RemoteError as ex:
            outside = str(ex)
        relisted = [f.path for f in await link.list_files("s")]
        await link.close()
        await server.close()
        return rig, files, refused, reply, outside, relisted

    rig, files, refused, reply, outside, relisted = run(main())
    assert [f.path for f in files] == ["s/big.bin", "s/small.txt"]
    assert "serves session files only" in refused and not rig.runs
    # only the file whose checksum still matches on the rig is marked; the mark itself is never listed
    assert reply == {"marked": 1, "changed": ["s/small.txt"]}
    mark = json.loads((root / "s" / MARK_NAME).read_text())
    assert list(mark["files"]) == ["big.bin"]
    assert mark["files"]["big.bin"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert "not in" in outside and relisted == ["s/big.bin", "s/small.txt"]
    assert (root / "s" / "big.bin").read_bytes() == data  # nothing deleted
