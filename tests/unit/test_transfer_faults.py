"""A session transfer (core.transfer over transports.zmq.file_source, real loopback sockets) when a file
changes on the rig after it was listed, or every chunk arrives corrupted: a clear error, and nothing is
marked verified (no SHA256SUMS, no mark on the rig, the record says failed)."""

import json

from helpers import run
from zmq_helpers import start_rig

from core.config import parse_rig
from core.paths import session_folder
from core.transfer import STATE_NAME, plan_session, run_session
from transports.registry import TRANSPORTS
from transports.zmq.file_source import ZmqFileSource
from transports.zmq.files import MARK_NAME

REF = "2026-11-30_2_KS002"


def rig_data(tmp_path):
    root = tmp_path / "rig"
    folder = session_folder(root, REF)
    (folder / "raw").mkdir(parents=True)
    (folder / "raw" / "a.bin").write_bytes(bytes(range(256)) * 4000)
    (folder / "b.txt").write_text("b" * 5000)
    return root, folder


class ChangesAfterListing(ZmqFileSource):
    """The rig's file is rewritten (same size, other bytes) right after the console listed it."""

    def __init__(self, *args, victim, **kwargs):
        super().__init__(*args, **kwargs)
        self.victim = victim

    async def list_files(self, prefix, hashes=True):
        listed = await super().list_files(prefix, hashes)
        self.victim.write_bytes(bytes(255 - b for b in self.victim.read_bytes()))
        return listed


class CorruptsEveryChunk(ZmqFileSource):
    """Every chunk's bytes are damaged on the way (its CRC no longer matches)."""

    async def _request(self, key, value):
        reply, blob = await super()._request(key, value)
        if key == "FETCH" and blob:
            blob = bytes([blob[0] ^ 0xFF]) + blob[1:]
        return reply, blob


def transfer_with(tmp_path, make_source):
    root, folder = rig_data(tmp_path)

    async def main():
        _, server = await start_rig(options={"data_dir": str(root), "files_only": True})
        uri = f"zmq://127.0.0.1:{server.port}"
        spec = parse_rig("sync", {"uri": "udp://127.0.0.1:9", "files": uri}, TRANSPORTS)
        job = plan_session(REF, tmp_path / "console", {"sync": spec}, env={})
        try:
            await run_session(job, lambda name, uri, spec: make_source(name, uri, spec, folder), {"sync": spec})
        finally:
            await server.close()
        return job

    job = run(main(), timeout=60)
    return job, folder


def assert_nothing_verified(job, folder):
    rig = job.rigs["sync"]
    assert rig.state == "failed" and not rig.verified and not job.verified
    assert not (job.to / "sync" / "SHA256SUMS").exists()
    assert not (folder / MARK_NAME).exists()
    record = json.loads((job.folder / STATE_NAME).read_text())
    assert record["verified"] is False and record["rigs"]["sync"]["state"] == "failed"
    assert record["rigs"]["sync"]["error"] == rig.error


def test_a_file_changed_on_the_rig_after_listing_is_a_clear_error_and_nothing_is_verified(tmp_path):
    job, folder = transfer_with(tmp_path, lambda name, uri, spec, folder: ChangesAfterListing(
        name, uri, spec, victim=folder / "raw" / "a.bin"))
    assert "raw/a.bin: changed on the rig after it was listed" in job.rigs["sync"].error
    assert_nothing_verified(job, folder)


def test_chunks_that_keep_arriving_corrupted_are_a_clear_error_and_nothing_is_verified(tmp_path):
    job, folder = transfer_with(tmp_path, lambda name, uri, spec, folder: CorruptsEveryChunk(name, uri, spec))
    assert "failed 8 times (corrupted chunk at offset 0)" in job.rigs["sync"].error
    assert_nothing_verified(job, folder)


class RigDiesAfter(ZmqFileSource):
    """The rig's server goes away (as a killed rig does) after the first few chunks; counts what is asked."""

    def __init__(self, *args, server, chunks, **kwargs):
        super().__init__(*args, chunk_size=4096, **kwargs)
        self.server, self.chunks, self.asked = server, chunks, []
        self.link.timeout = 1.0  # (a short wait for a dead rig, so the test is quick)

    async def _request(self, key, value):
        if key == "FETCH":
            self.asked.append(value["path"])
            if len(self.asked) == self.chunks:
                await self.server.close()
        return await super()._request(key, value)


def test_a_rig_gone_mid_transfer_fails_its_transfer_once_not_file_after_file(tmp_path):
    root, folder = rig_data(tmp_path)
    for name in ("z1.bin", "z2.bin", "z3.bin"):  # files after the one the rig dies in
        (folder / name).write_bytes(b"z" * 10_000)

    async def main():
        _, server = await start_rig(options={"data_dir": str(root), "files_only": True})
        uri = f"zmq://127.0.0.1:{server.port}"
        spec = parse_rig("sync", {"uri": "udp://127.0.0.1:9", "files": uri}, TRANSPORTS)
        job = plan_session(REF, tmp_path / "console", {"sync": spec}, env={})
        made = []

        def open_source(name, uri, spec):
            made.append(RigDiesAfter(name, uri, spec, server=server, chunks=3))
            return made[0]

        await run_session(job, open_source, {"sync": spec})
        return job, made[0].asked

    job, asked = run(main(), timeout=30)
    rig = job.rigs["sync"]
    assert rig.state == "failed" and "did not answer in time" in rig.error
    # b.txt came whole, the rig died in raw/a.bin; the files after it were never asked for (each would have
    # waited for the dead rig in its turn)
    prefix = folder.relative_to(tmp_path / "rig").as_posix()
    assert set(asked) == {f"{prefix}/b.txt", f"{prefix}/raw/a.bin"}
    assert not (job.to / "sync" / "SHA256SUMS").exists()


def test_a_long_listing_is_acknowledged_so_a_working_rig_is_waited_for(tmp_path, monkeypatch):
    from transports.zmq import server as zmq_server
    from transports.zmq.file_store import FileStore

    monkeypatch.setattr(zmq_server, "FILES_ACK_EVERY", 0.2)
    slow = FileStore.list_files

    def list_slowly(self, prefix="", hashes=True):
        import time

        time.sleep(2.5)  # checksums of a big session: longer than the console's 1 s without a word
        return slow(self, prefix, hashes)

    monkeypatch.setattr(FileStore, "list_files", list_slowly)

    class Patient(ZmqFileSource):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.link.timeout = 1.0

    job, folder = transfer_with(tmp_path, lambda name, uri, spec, folder: Patient(name, uri, spec))
    assert job.rigs["sync"].verified, job.rigs["sync"].error
