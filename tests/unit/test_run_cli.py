"""``rigdeck run`` over in-memory rigs (the integration tests drive real rig services over UDP)."""

import json

import pytest
from fake_rigs import FakeLink, FakeRig

from app import cli
from app.commands import run as run_cmd
from core.journal import load_session


@pytest.fixture
def fake_rigs(monkeypatch, tmp_path):
    log: list = []
    rigs = {n: FakeRig(n, main_sync=(n == "sync"), log=log) for n in ("sync", "cam", "mic")}
    monkeypatch.setattr(run_cmd, "LINK_FACTORY", lambda spec: FakeLink(rigs[spec.name], spec.uri))
    rigs_file = tmp_path / "rigs.yaml"
    rigs_file.write_text("sync: udp://127.0.0.1:9001\ncam: udp://127.0.0.1:9002\nmic: udp://127.0.0.1:9003\n")
    return rigs, rigs_file


def run_json(capsys, *argv):
    code = cli.main(["run", *argv, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_run_json_summary(fake_rigs, tmp_path, capsys):
    rigs, rigs_file = fake_rigs
    code, summary, err = run_json(capsys, "--rigs", str(rigs_file), "--subject", "KS001", "--duration", "0.01",
                                  "--data-dir", str(tmp_path / "data"), "--timeout", "0.5")
    assert code == 0, summary
    assert summary["ok"] and summary["outcome"] == "completed" and summary["main_sync"] == "sync"
    assert summary["exp_ref"].endswith("_1_KS001")
    assert {n: r["status_name"] for n, r in summary["rigs"].items()} == dict.fromkeys(rigs, "STOPPED")
    assert all(r["outcome"] == "ok" for r in summary["rigs"].values())
    assert load_session(summary["folder"]).finished
    assert "start" in err and "cam" in err  # live progress went to stderr


def test_run_human_output_and_failure_exit(fake_rigs, tmp_path, capsys):
    rigs, rigs_file = fake_rigs
    rigs["mic"].faults["EXPSTART"] = "error"
    code = cli.main(["run", "--rigs", str(rigs_file), "--subject", "KS001", "--duration", "0.01",
                     "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 1
    assert "== failed" in out and "error in start" in out and "mic" in out


def test_run_continue_policy(fake_rigs, tmp_path, capsys):
    rigs, rigs_file = fake_rigs
    rigs["mic"].faults["EXPINIT"] = "error"
    code, summary, _ = run_json(capsys, "--rigs", str(rigs_file), "--subject", "KS001", "--duration", "0.01",
                                "--data-dir", str(tmp_path / "data"), "--policy", "continue")
    assert code == 1 and summary["degraded"] and summary["outcome"] == "completed_with_errors"
    assert summary["rigs"]["mic"]["participating"] is False and summary["rigs"]["mic"]["failed_step"] == "init"
    assert summary["rigs"]["cam"]["status_name"] == "STOPPED"


def test_bad_input_exits_2(fake_rigs, tmp_path, capsys):
    _, rigs_file = fake_rigs
    assert cli.main(["run", "--rigs", str(rigs_file), "--subject", "a/b"]) == 2
    assert cli.main(["run", "--rigs", str(rigs_file), "--subject", "S", "--main-sync", "nope"]) == 2
    assert cli.main(["run", "--rigs", str(tmp_path / "none.yaml"), "--subject", "S"]) == 2
    assert cli.main(["run", "--attach", "2026-11-22_1_S", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no such rig" in err and "no session journal" in err


def test_attach_and_stop(fake_rigs, tmp_path, capsys, monkeypatch):
    rigs, rigs_file = fake_rigs
    data = tmp_path / "data"

    # a console that dies while running: simulate with a run whose wait never ends, then drop it
    async def die(self, duration):
        raise SystemExit(99)

    monkeypatch.setattr(run_cmd.Runner, "wait_running", die)
    with pytest.raises(SystemExit):
        cli.main(["run", "--rigs", str(rigs_file), "--subject", "KS001", "--data-dir", str(data)])
    capsys.readouterr()
    assert all(r.status == 20 for r in rigs.values())
    code = cli.main(["run", "--unfinished", "--data-dir", str(data), "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert code == 0 and len(listed) == 1 and listed[0]["phase"] == "running"
    ref = listed[0]["exp_ref"]
    code, summary, err = run_json(capsys, "--attach", ref, "--stop", "--data-dir", str(data))
    assert code == 0, summary
    assert summary["exp_ref"] == ref and summary["phase"] == "stopped"
    assert all(r.status == 30 for r in rigs.values())
    assert "attached to" in err
    assert run_cmd.find_unfinished(data) == []


def test_a_rig_lost_while_running_is_printed_as_an_incident_and_exits_3(fake_rigs, tmp_path, capsys):
    rigs, rigs_file = fake_rigs
    cam, answer = rigs["cam"], rigs["cam"].handle

    def answer_then_die(event, data):  # the rig starts, then its PC goes down
        reply = answer(event, data)
        cam.dead = cam.dead or event.name == "EXPSTART"
        return reply

    cam.handle = answer_then_die
    code = cli.main(["run", "--rigs", str(rigs_file), "--subject", "KS001", "--duration", "0.01", "--timeout", "0.2",
                     "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == run_cmd.EXIT_INCIDENTS == 3
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("incident:")]
    assert line.strip().startswith("incident: cam lost from ") and line.strip().endswith(", not back (no reply)")
    assert "exit status" in run_cmd.__doc__.lower() and "3 a rig of the session was lost" in run_cmd.__doc__
