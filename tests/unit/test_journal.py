"""Journal: one write per line, torn-tail tolerance, kill -9 safety, redaction, unfinished sessions."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.journal import (
    JOURNAL_NAME,
    REDACTED,
    Journal,
    find_unfinished,
    load_session,
    read_description,
    read_journal,
    redact,
    redact_alyx,
    write_yaml_atomic,
)

ROOT = Path(__file__).resolve().parents[2]


def test_write_and_read_back(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.write("session", exp_ref="2026-11-22_1_KS001", subject="KS001", rigs={"a": {"uri": "udp://h:1"}},
                participants=["a"])
        j.write("send", rig="a", event="EXPINIT", data=[{"exp_ref": "x"}])
        j.write("reply", rig="a", event="EXPINIT", status=10)
        j.write("phase", phase="initialised")
    read = read_journal(path)
    assert not read.problems and [r["seq"] for r in read.records] == [1, 2, 3, 4]
    assert all(line.startswith("{") for line in path.read_text().splitlines())
    # a reopened journal continues the numbering (reattach)
    with Journal(path) as j:
        assert j.write("attach")["seq"] == 5
    s = load_session(path)
    assert s.exp_ref == "2026-11-22_1_KS001" and s.phase == "initialised" and s.statuses == {"a": 10}
    assert not s.finished


def test_reader_reports_a_torn_last_line_and_garbage(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.write("phase", phase="running")
    with open(path, "ab") as f:
        f.write(b"not json\n[1, 2]\n")
        f.write(b'{"seq": 9, "kind": "ph')  # what a torn write would leave
    read = read_journal(path)
    assert len(read.records) == 1 and read.torn == b'{"seq": 9, "kind": "ph'
    assert len(read.bad_lines) == 2
    assert any("torn" in p for p in read.problems)
    assert load_session(path).phase == "running"


def test_redaction():
    data = {"user": "ann", "token": "abc", "nested": [{"Authorization": "Bearer x", "ok": 1}], "api_key": "k"}
    assert redact(data) == {"user": "ann", "token": REDACTED, "nested": [{"Authorization": REDACTED, "ok": 1}],
                            "api_key": REDACTED}
    assert redact_alyx(["https://alyx", {"ann": {"token": "abc"}, "bob": "raw"}]) == [
        "https://alyx", {"ann": REDACTED, "bob": REDACTED}]
    assert redact_alyx([None, {}]) == [None, {}]


def test_journal_redacts_what_it_writes(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.write("send", data=["https://alyx", {"ann": {"token": "SECRET"}}])
    assert "SECRET" not in path.read_text()


def test_description_is_replaced_atomically(tmp_path):
    path = tmp_path / "d.yaml"
    write_yaml_atomic(path, {"exp_ref": "x", "outcome": "pending"})
    write_yaml_atomic(path, {"exp_ref": "x", "outcome": "completed", "token": "t"})
    assert read_description(path) == {"exp_ref": "x", "outcome": "completed", "token": REDACTED}
    assert [p.name for p in tmp_path.iterdir()] == ["d.yaml"]  # no temp file left behind


def test_find_unfinished(tmp_path):
    for n, phase in [(1, "stopped"), (2, "running"), (3, "initialised"), (4, "failed")]:
        folder = tmp_path / "KS001" / "2026-11-22" / f"{n:03d}"
        with Journal(folder / JOURNAL_NAME) as j:
            j.write("session", exp_ref=f"2026-11-22_{n}_KS001", subject="KS001")
            j.write("phase", phase=phase)
    assert [s.exp_ref for s in find_unfinished(tmp_path)] == ["2026-11-22_2_KS001", "2026-11-22_3_KS001"]
    assert find_unfinished(tmp_path / "nowhere") == []


WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from core.journal import Journal
j = Journal(sys.argv[1])
i = 0
while True:
    i += 1
    j.write("reply", rig=f"rig{i % 7}", event="EXPSTATUS", data="x" * ((i * 7919) % 60000), i=i)
    if i % 10 == 0:
        j.sync()
    print(i, flush=True)
"""


def test_kill_9_never_loses_a_line_and_tears_at_most_the_last(tmp_path):
    """A real process appends lines of up to 60 kB as fast as it can and is SIGKILLed mid-stream. The
    kernel may stop the write in progress between pages, so the last line may be torn: never another one,
    and a journal opened again after that starts its records on a line of their own."""
    path = tmp_path / "j.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ROOT)], stdout=subprocess.PIPE,
                            text=True)
    acknowledged = 0
    try:
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 300:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    read = read_journal(path)
    assert read.bad_lines == []
    numbers = [r["i"] for r in read.records]
    # every line the writer reported as written is there, complete, in order, nothing missing in between
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= acknowledged
    assert all(len(r["data"]) == (r["i"] * 7919) % 60000 for r in read.records)
    if read.torn is not None:  # the line being written when the kill came, cut short
        assert read.torn.startswith(b'{"seq":%d,' % (len(numbers) + 1))
    with Journal(path) as j:  # a console reattaching goes on writing
        j.write("attach", note="after the kill")
    again = read_journal(path)
    assert again.torn is None and [r["i"] for r in again.records[:-1]] == numbers
    assert again.records[-1]["kind"] == "attach" and again.records[-1]["seq"] == numbers[-1] + 1
    assert len(again.bad_lines) == (read.torn is not None)  # the fragment, on a line of its own


def test_a_journal_opened_after_a_torn_write_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"seq":1,"kind":"session"}\n{"seq":2,"kind":"rep')  # a dead writer's half line
    with Journal(path) as j:
        j.write("attach")
    read = read_journal(path)
    assert [(r["seq"], r["kind"]) for r in read.records] == [(1, "session"), (2, "attach")]
    assert read.torn is None and len(read.bad_lines) == 1 and read.bad_lines[0][0] == 2


def test_find_unfinished_can_skip_old_days(tmp_path):
    import datetime as dt

    for day in ("2026-10-01", "2026-11-20"):
        with Journal(tmp_path / "KS001" / day / "001" / JOURNAL_NAME) as j:
            j.write("session", exp_ref=f"{day}_1_KS001", subject="KS001")
            j.write("phase", phase="running")
    assert len(find_unfinished(tmp_path)) == 2
    assert [s.exp_ref for s in find_unfinished(tmp_path, since=dt.date(2026, 11, 9))] == ["2026-11-20_1_KS001"]
