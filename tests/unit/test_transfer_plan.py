"""core.transfer without a network: which rigs transfer, where files go, what a record remembers, which
sessions are pending, SHA256SUMS that sha256sum accepts, errors in plain words."""

import asyncio
import errno
import hashlib
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from core.config import ConfigError, parse_rig
from core.journal import JOURNAL_NAME, Journal
from core.paths import session_folder
from core.transfer import (
    NO_ENDPOINT,
    OPTED_OUT,
    Fetched,
    FileEntry,
    RigTransfer,
    file_source_uri,
    pending_sessions,
    pending_text,
    plain_error,
    plan_session,
    rig_prefix,
    run_rig,
    transfer_root,
    write_sums,
)
from transports.registry import TRANSPORTS
from transports.zmq.files import PART_SUFFIX, partial_bytes

REF = "2026-11-30_3_KS001"


def spec(name, **entry):
    return parse_rig(name, entry, TRANSPORTS)


def test_where_each_rig_serves_its_files():
    assert file_source_uri(spec("z", uri="zmq://10.0.0.2:11002")) == ("zmq://10.0.0.2:11002", None)
    assert file_source_uri(spec("u", uri="udp://10.0.0.3:9999", files="zmq://10.0.0.3:11010")) == \
        ("zmq://10.0.0.3:11010", None)
    assert file_source_uri(spec("i", uri="udp://10.0.0.4:9999")) == (None, NO_ENDPOINT)
    assert file_source_uri(spec("o", uri="zmq://10.0.0.2:11002", transfer=False)) == (None, OPTED_OUT)
    # a journal's record of a rig works the same way
    assert file_source_uri({"uri": "tcp://h:1", "options": {"files": "zmq://h:2"}}) == ("zmq://h:2", None)


@pytest.mark.parametrize("bad", ["tcp://h:1", "zmq://h", "h:1", 3, "zmq://:5"])
def test_the_files_option_is_validated_like_every_option(bad):
    with pytest.raises(ConfigError, match="files must"):
        spec("u", uri="udp://127.0.0.1:9999", files=bad)
    with pytest.raises(ConfigError, match="transfer must"):
        spec("u", uri="udp://127.0.0.1:9999", transfer="no")


def test_destination_root_and_layout(tmp_path, monkeypatch):
    assert transfer_root(tmp_path / "data", env={}) == tmp_path / "data"
    assert transfer_root(tmp_path / "data", env={"RIGDECK_TRANSFER_DIR": str(tmp_path / "lab")}) == tmp_path / "lab"
    assert transfer_root(tmp_path / "data", tmp_path / "cli", env={"RIGDECK_TRANSFER_DIR": "x"}) == tmp_path / "cli"
    # a relative --data-dir or --to is kept absolute: the record and a report read from elsewhere must find it
    monkeypatch.chdir(tmp_path)
    assert transfer_root("data", env={}) == tmp_path / "data"
    assert transfer_root("data", "lab/x", env={}) == tmp_path / "lab" / "x"
    assert rig_prefix(REF) == "KS001/2026-11-30/003"
    job = plan_session(REF, tmp_path / "data", {"z": spec("z", uri="zmq://h:1"), "i": spec("i", uri="udp://h:2")},
                       env={})
    assert job.to == tmp_path / "data" / "KS001" / "2026-11-30" / "003"
    assert job.rigs["i"].skipped == NO_ENDPOINT and job.rigs["z"].transferring
    assert not job.verified  # z has not run yet; i does not count


def test_a_saved_record_keeps_its_destination_and_what_was_verified(tmp_path):
    rigs = {"z": spec("z", uri="zmq://h:1"), "y": spec("y", uri="zmq://h:2")}
    job = plan_session(REF, tmp_path / "data", rigs, to=tmp_path / "lab")
    job.rigs["z"].files["a.bin"] = FileEntry("a.bin", 10, "ab" * 32, 10, True)
    job.rigs["z"].state = "verified"
    job.rigs["y"].files["b.bin"] = FileEntry("b.bin", 10, "cd" * 32, 4, False)
    job.rigs["y"].state, job.rigs["y"].error = "failed", "the destination disk is full"
    job.save()
    again = plan_session(REF, tmp_path / "data", rigs, env={"RIGDECK_TRANSFER_DIR": str(tmp_path / "other")})
    assert again.to == tmp_path / "lab" / "KS001" / "2026-11-30" / "003"  # where the first run put files
    assert again.rigs["z"].verified and again.rigs["z"].files["a.bin"].verified
    assert again.rigs["y"].state == "waiting" and not again.rigs["y"].files["b.bin"].verified
    assert again.summary()["rigs"]["z"] == {"files": 1, "bytes": 10, "verified": True, "error": None,
                                           "fetched_bytes": 0}
    # a different destination starts afresh (nothing is verified there)
    moved = plan_session(REF, tmp_path / "data", rigs, to=tmp_path / "usb")
    assert not moved.rigs["z"].verified


def write_journal(data_dir, exp_ref, phase, rigs, started=True):
    folder = session_folder(data_dir, exp_ref)
    folder.mkdir(parents=True)
    with Journal(folder / JOURNAL_NAME) as journal:
        journal.write("session", exp_ref=exp_ref, subject="KS001", participants=list(rigs),
                      rigs={n: {"uri": uri, "role": "aux", "options": opts} for n, (uri, opts) in rigs.items()})
        if started:
            journal.write("phase", phase="running")
        journal.write("phase", phase=phase)
    return folder


def test_pending_sessions_are_finished_recorded_and_not_all_verified(tmp_path):
    data = tmp_path / "data"
    both = {"cams": ("zmq://h:1", {}), "sync": ("udp://h:2", {"files": "zmq://h:3"}), "ibl": ("udp://h:4", {})}
    write_journal(data, "2026-11-30_1_KS001", "stopped", both)
    write_journal(data, "2026-11-30_2_KS001", "running", both)  # still running: not pending yet
    write_journal(data, "2026-11-30_3_KS001", "failed", both, started=False)  # never recorded
    done = write_journal(data, "2026-11-30_4_KS001", "stopped", {"cams": ("zmq://h:1", {})})
    job = plan_session("2026-11-30_4_KS001", data, {"cams": {"uri": "zmq://h:1"}}, env={})
    job.rigs["cams"].state = "verified"
    job.save()
    assert (done / "_rigdeck_transfer.json").is_file()
    pending = pending_sessions(data)
    assert [(p.exp_ref, p.rigs) for p in pending] == [("2026-11-30_1_KS001", ["cams", "sync"])]
    assert pending_text(pending) == "1 session on 2 rigs not yet transferred"
    # today's rigs file opting a rig out wins over the journal's record
    assert [p.rigs for p in pending_sessions(data, specs={"sync": spec("sync", uri="udp://h:2", transfer=False)})] \
        == [["cams"]]
    assert pending_text([]) == ""


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_sha256sums_is_what_sha256sum_checks(tmp_path):
    files = []
    for rel, data in (("a.bin", b"abc"), ("raw video/left cam.rdrec", b"x" * 1000)):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
    write_sums(tmp_path, files)
    ok = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "a.bin").write_bytes(b"abd")
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path, capture_output=True).returncode


def test_errors_in_plain_words():
    assert plain_error(OSError(errno.ENOSPC, "No space left on device", "/mnt/x")) == \
        "the destination disk is full (/mnt/x)"
    assert "file size limit or disk full" in plain_error(OSError(errno.EFBIG, "File too large"))
    assert plain_error(OSError(errno.EROFS, "Read-only file system")).startswith("cannot write to the destination")
    assert plain_error(ValueError("odd")) == "ValueError: odd"


def test_rate_and_eta_come_from_recent_bytes_and_a_stalled_rig_says_so():
    from app.transfers import transfer_row
    from core.transfer import FileEntry, RigTransfer

    rig = RigTransfer("cams", state="fetching")
    rig.files["a.bin"] = FileEntry("a.bin", 100_000_000, "")
    for t, done in ((0.0, 0), (1.0, 10_000_000), (2.0, 20_000_000)):
        rig.files["a.bin"].done = done
        rig.sample(now=100.0 + t)
    assert rig.rate(now=102.5) == 10_000_000 and rig.eta(now=102.5) == 8.0
    moving = transfer_row("ref", rig, now=102.5)
    assert (moving.state, moving.rate, moving.eta) == ("copying", "10.0 MB/s", "8 s")
    # the rig went away: no more bytes; after a couple of seconds the row stops looking live
    stalled = transfer_row("ref", rig, now=106.0)
    assert stalled.rate == "" and stalled.eta == "" and stalled.state == "stalled: nothing from the rig for 4 s"
    assert rig.stalled_for(now=106.0) == 4.0
    # the rig was last heard with its last chunk (it was killed): stalled, however recent that was
    rig.heard = lambda: 101.9
    assert transfer_row("ref", rig, now=104.5).state == "stalled: nothing from the rig for 2 s"
    # no data, but the rig keeps acknowledging (it computes a checksum): waiting, not stalled
    rig.heard = lambda: 105.5
    assert transfer_row("ref", rig, now=106.0).state.startswith("waiting for checksums (the rig answers)")
    assert transfer_row("ref", rig, now=109.0).state.startswith("stalled")  # and then it stopped too
    # a rig that goes quiet while it lists the session (it acknowledges a long listing every 2 s)
    listing = RigTransfer("ephys", state="listing")
    listing.heard = lambda: 100.0
    assert transfer_row("ref", listing, now=102.0).state == "listing files…"
    assert transfer_row("ref", listing, now=104.5).state == "stalled while listing files: nothing from the rig for 4 s"
    rig.files["a.bin"].done = 30_000_000  # it is back
    rig.sample(now=107.0)
    assert transfer_row("ref", rig, now=107.5).state == "copying" and rig.stalled_for(now=107.5) == 0.5


def test_a_resumed_rig_counts_what_its_interrupted_fetches_left_before_the_rig_answers(tmp_path):
    """A Retry (or a resume after a restart) shows where the rig's files stand at once, not 0% until each
    file is reached; a partial file longer than the listed one counts for no more than its size."""
    job = plan_session(REF, tmp_path / "data", {"cams": spec("cams", uri="zmq://127.0.0.1:1")}, to=tmp_path / "to")
    rig = job.rigs["cams"]
    rig.files = {"raw/a.bin": FileEntry("raw/a.bin", 1000, ""), "b.bin": FileEntry("b.bin", 500, "s" * 64, 500, True),
                 "c.bin": FileEntry("c.bin", 100, "")}
    folder = job.to / "cams" / "raw"
    folder.mkdir(parents=True)
    (folder / ("a.bin" + PART_SUFFIX)).write_bytes(b"x" * 300)
    (job.to / "cams" / ("c.bin" + PART_SUFFIX)).write_bytes(b"x" * 400)
    seen = []

    class Interrupted:
        def partial_bytes(self, dest):
            return partial_bytes(dest)

        async def list_files(self, prefix, hashes=True):
            seen.append((rig.state, rig.done_bytes))
            raise ConnectionError("the rig went away again")

    asyncio.run(run_rig(job, rig, Interrupted()))
    assert seen == [("listing", 300 + 500 + 100)] and rig.state == "failed"
    assert partial_bytes(tmp_path / "nothing" / "here.bin") == 0


@dataclass(frozen=True)
class Listed:
    path: str
    size: int
    sha256: str
    mtime: float = 0.0


class QuickRig:
    """A rig's files as a quick listing gives them (no checksums), recording what the console asks."""

    def __init__(self, files):
        self.files, self.asked, self.fetched, self.marked = files, [], [], {}

    async def list_files(self, prefix, hashes=True):
        self.asked.append(hashes)
        return [Listed(f"{prefix}/{path}", 3, "", mtime) for path, mtime in self.files.items()]

    async def fetch_file(self, remote, dest, progress):
        self.fetched.append(remote.path.rsplit("/", 1)[1])
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"new")
        progress(remote.path, 3, 3)
        return Fetched(3, Listed(remote.path, 3, "f" * 64, remote.mtime))

    async def mark_transferred(self, prefix, files):
        self.marked.update({f.path.rsplit("/", 1)[1]: f.sha256 for f in files})


def test_a_resume_lists_quickly_and_keeps_the_verified_files_that_did_not_change(tmp_path):
    """A verified file is told from a changed one by size and modification time (rsync's quick check), so a
    resumed transfer does not wait for the rig to hash the whole session; a record of an earlier version
    (no times) keeps the checksummed listing."""
    job = plan_session(REF, tmp_path / "data", {"cams": spec("cams", uri="zmq://127.0.0.1:1")}, to=tmp_path / "to")
    rig = job.rigs["cams"]
    rig.files = {"a.bin": FileEntry("a.bin", 3, "a" * 64, 3, True, mtime=10.0),
                 "b.bin": FileEntry("b.bin", 3, "b" * 64, 3, True, mtime=10.0), "c.bin": FileEntry("c.bin", 3, "")}
    for name in ("a.bin", "b.bin"):
        (job.to / "cams").mkdir(parents=True, exist_ok=True)
        (job.to / "cams" / name).write_bytes(b"old")
    source = QuickRig({"a.bin": 10.0, "b.bin": 11.0, "c.bin": 10.0})  # b.bin was rewritten on the rig since
    asyncio.run(run_rig(job, rig, source))
    assert source.asked == [False] and rig.state == "verified"
    assert source.fetched == ["b.bin", "c.bin"]  # a.bin kept, b.bin changed, c.bin never verified
    # the rig is asked to mark each file with the SHA-256 it was verified with (a.bin: from the record)
    assert source.marked == {"a.bin": "a" * 64, "b.bin": "f" * 64, "c.bin": "f" * 64}
    again = RigTransfer.from_json("cams", rig.to_json())
    assert {p: f.mtime for p, f in again.files.items()} == {"a.bin": 10.0, "b.bin": 11.0, "c.bin": 10.0}

    earlier = plan_session(REF, tmp_path / "d2", {"cams": spec("cams", uri="zmq://127.0.0.1:1")}, to=tmp_path / "to")
    earlier.rigs["cams"].files = {"a.bin": FileEntry("a.bin", 3, "a" * 64, 3, True)}
    old_record = QuickRig({"a.bin": 10.0})
    asyncio.run(run_rig(earlier, earlier.rigs["cams"], old_record))
    assert old_record.asked == [True]
    bad = RigTransfer.from_json("cams", {"files": {"a.bin": {"size": 3, "sha256": "", "mtime": 2**4000}}})
    assert bad.files["a.bin"].mtime is None  # a record's nonsense is no time (the file is checked again)
