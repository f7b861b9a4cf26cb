"""After Stop the console gathers every rig's files on its own, in the background: the next session starts,
runs and stops while the first one's transfer is still held up, and ``transfer: false`` opts a rig out."""

import asyncio
import hashlib
import json
from dataclasses import dataclass

from fake_rigs import FakeLink, FakeRig
from helpers import wait_until

from app.console import Console
from app.transfers import TransferManager
from core.session import Phase
from core.transfer import OPTED_OUT, Fetched


@dataclass(frozen=True)
class Listed:
    path: str
    size: int
    sha256: str


class GatedSource:
    """A rig's files whose fetching waits until the test opens the gate (hardware-free stand-in for a rig)."""

    def __init__(self, name, gate, marks):
        self.name, self.gate, self.marks = name, gate, marks
        self.body = f"{name} data ".encode() * 100

    async def list_files(self, prefix, hashes=True):
        return [Listed(f"{prefix}/raw/{self.name}.bin", len(self.body), hashlib.sha256(self.body).hexdigest())]

    async def fetch_file(self, remote, dest, progress):
        await self.gate.wait()
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(self.body)
        progress(remote.path, remote.size, remote.size)
        return Fetched(remote.size, remote)

    async def mark_transferred(self, prefix, files):
        self.marks.append((self.name, prefix, [f.path for f in files]))

    async def close(self):
        pass


def test_after_stop_files_are_gathered_in_the_background_and_never_hold_up_the_next_session(tmp_path):
    rigs = {n: FakeRig(n, main_sync=(n == "sync")) for n in ("sync", "cam", "mic")}
    path = tmp_path / "rigs.yaml"
    path.write_text("sync: {uri: 'udp://127.0.0.1:9001', files: 'zmq://127.0.0.1:9101', transfer: false}\n"
                    "cam: {uri: 'udp://127.0.0.1:9002', files: 'zmq://127.0.0.1:9102'}\n"
                    "mic: {uri: 'udp://127.0.0.1:9003', files: 'zmq://127.0.0.1:9103'}\n")
    console = Console(tmp_path / "data", timeout=0.2, poll_interval=0.05,
                      link_factory=lambda spec: FakeLink(rigs[spec.name], spec.uri))
    gate, marks, opened = asyncio.Event(), [], []

    def open_source(name, uri, spec):
        opened.append((name, uri))
        return GatedSource(name, gate, marks)

    async def main():
        console.transfers = TransferManager(console.data_dir, open_source=open_source)
        await console.load(path)
        assert (await console.start("KS001")).ok
        assert (await console.stop()).ok
        first = console.session.exp_ref
        job = console.transfers.jobs[first]
        await wait_until(lambda: {r.state for r in job.transferring} == {"fetching"})
        # the next session: every step completes while the first one's files are still on their way
        assert (await console.start("KS001")).ok and console.phase is Phase.RUNNING
        assert (await console.stop()).ok
        second = console.session.exp_ref
        states = ({r.state for r in job.transferring}, console.transfers.running(second))
        gate.set()
        await console.transfers.wait(first)
        await console.transfers.wait(second)
        await wait_until(lambda: any("verified" in e.text for e in console.logbook.entries if second in e.text))
        jobs = dict(console.transfers.jobs)
        await console.close()
        return first, second, states, jobs

    first, second, states, jobs = asyncio.run(main())
    assert first != second and states == ({"fetching"}, True)
    assert sorted(opened) == sorted([("cam", "zmq://127.0.0.1:9102"), ("mic", "zmq://127.0.0.1:9103")] * 2)
    for ref in (first, second):
        job = jobs[ref]
        assert job.verified and job.rigs["sync"].skipped == OPTED_OUT
        for name in ("cam", "mic"):
            assert (job.to / name / "raw" / f"{name}.bin").is_file()
            assert (job.to / name / "SHA256SUMS").read_text().endswith(f"  raw/{name}.bin\n")
    assert len(marks) == 4
    for ref in (first, second):  # each session's saved report was rewritten once its files were verified
        report = json.loads((jobs[ref].folder / "_rigdeck_report.json").read_text())
        assert {n: report["rigs"][n]["files"]["verified"] for n in ("cam", "mic")} == {"cam": True, "mic": True}
    texts = [e.text for e in console.logbook.entries]
    assert any(t.startswith(f"Files of {first} verified") for t in texts), texts
