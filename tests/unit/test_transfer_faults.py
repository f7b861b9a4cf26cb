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
