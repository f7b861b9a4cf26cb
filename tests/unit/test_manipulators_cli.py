"""``rigdeck manipulators``: every action against RigDeck's server (simulated driver, real loopback socket) and
against the ephys-link stand-in (no push: the CLI polls), exit codes and one-line error texts, tokens,
control, and STOP ALL from the command line while 8 manipulators move and stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import socketio
from helpers import wait_until_blocking
from sio_helpers import body, url
from sio_thread import served_in_thread

from app.cli import main
from app.commands.manipulators import UsageError, manipulator_url
from core.drivers.manipulator import INSIDE_BRAIN_TEXT, Vec4

ROOT = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["manipulators", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def uri(server) -> str:
    return f"sio://127.0.0.1:{server.port}"


def one_json(out: str) -> dict:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_list_info_and_position_text_and_json(capsys):
    with served_in_thread(ids=("a", "b"), home=Vec4(1, 2, 3, 4)) as (_, server, _sim):
        assert cli(capsys, uri(server), "list") == (0, "a\nb\n", "")
        assert one_json(cli(capsys, "--json", uri(server), "list")[1]) == {"manipulators": ["a", "b"]}
        code, out, _ = cli(capsys, uri(server), "info")
        assert code == 0 and "RigDeck" in out and "pushed at up to 50 Hz" in out and "controller" in out
        info = one_json(cli(capsys, uri(server), "info", "--json")[1])
        assert info["server"] == "RigDeck" and info["api_version"] == "2.3.6" and info["push"] is True
        assert info["platform"]["dimensions"] == {"x": 20.0, "y": 20.0, "z": 20.0, "w": 20.0}
        assert cli(capsys, uri(server), "position", "a") == (0, "a  x=1.0000 y=2.0000 z=3.0000 w=4.0000\n", "")
        pos = one_json(cli(capsys, uri(server), "position", "--json")[1])
        assert pos == {"positions": {i: {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0} for i in ("a", "b")}}


def test_move_takes_time_and_depth_inside_and_their_errors(capsys):
    with served_in_thread() as (loop, server, sim):
        t0 = time.monotonic()
        code, out, err = cli(capsys, "--json", uri(server), "move", "0", "0", "0", "3", "0", "--speed", "15")
        assert (code, err) == (0, "") and time.monotonic() - t0 >= 0.19  # 3 mm at 15 mm/s
        assert one_json(out) == {"id": "0", "position": {"x": 0.0, "y": 0.0, "z": 3.0, "w": 0.0}}
        assert loop.call(sim.position("0")) == Vec4(0, 0, 3, 0)
        assert cli(capsys, uri(server), "inside", "0", "on") == (0, "0  inside brain: on\n", "")
        assert loop.check(lambda: sim.is_inside_brain("0"))
        code, out, err = cli(capsys, uri(server), "move", "0", "1", "1", "1", "1", "--speed", "100")
        assert (code, out) == (1, "") and err == f"rigdeck manipulators: {INSIDE_BRAIN_TEXT}\n"
        assert one_json(cli(capsys, uri(server), "depth", "0", "2.5", "--speed", "100", "--json")[1]) == {
            "id": "0", "depth": 2.5}
        assert cli(capsys, uri(server), "inside", "0", "off", "--json")[1] == '{"id":"0","inside":false}\n'
        assert loop.call(sim.position("0")) == Vec4(0, 0, 3, 2.5)


@pytest.mark.parametrize(("argv", "text"), [
    (["position", "9"], "ManipulatorError: unknown manipulator '9' (known: 0, 1)"),
    (["position", "-1"], "ManipulatorError: unknown manipulator '-1' (known: 0, 1)"),
    (["move", "0", "30", "0", "0", "0", "--speed", "1"], "ManipulatorError: target x=30 mm is outside the travel"),
    (["stop", "7"], "ManipulatorError: unknown manipulator '7'"),
])
def test_server_errors_exit_1_with_the_ephys_link_text_on_one_line(capsys, argv, text):
    with served_in_thread() as (loop, server, sim):
        code, out, err = cli(capsys, uri(server), *argv)
        assert code == 1 and out == "" and err.startswith(f"rigdeck manipulators: {text}")
        assert err.count("\n") == 1 and "Traceback" not in err
        code, out, err = cli(capsys, "--json", uri(server), *argv)
        assert code == 1 and one_json(out)["error"].startswith(text)
        assert loop.call(sim.position("0")) == Vec4()


@pytest.mark.parametrize(("uri", "expected"), [
    ("sio://127.0.0.1", "http://127.0.0.1:3000"),
    ("sio://Rig-PC.lab:3001/", "http://rig-pc.lab:3001"),
    ("http://10.0.0.5:3000", "http://10.0.0.5:3000"),
    ("localhost:4000", "http://localhost:4000"),
    ("sio://[::1]:7", "http://[::1]:7"),
    ("sio://relay.lab:3000/rig2-probes", "http://relay.lab:3000?pinpoint_id=rig2-probes"),
])
def test_manipulator_uris_map_to_socketio_urls(uri, expected):
    assert manipulator_url(uri) == expected


@pytest.mark.parametrize("uri", ["udp://h:1", "sio://", "sio://h:0", "sio://h/a/b", "sio://h/x", "sio://h/a?b"])
def test_bad_manipulator_uris_say_why(uri):
    with pytest.raises(UsageError):
        manipulator_url(uri)


@pytest.mark.parametrize(("argv", "message"), [
    (["udp://127.0.0.1:1", "list"], "not a manipulator server URI"),
    (["sio://127.0.0.1:70000", "list"], "Invalid port number 70000"),
    (["sio://", "list"], "bad manipulator URI"),
    (["sio://127.0.0.1:1", "list"], "cannot connect"),
])
def test_bad_or_unreachable_uri_exits_2_with_a_clear_message(capsys, argv, message):
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["move", "0", "1", "2", "3", "4"],  # --speed is required: no default speed for a probe near a brain
    ["move", "0", "1", "2", "3", "nan", "--speed", "1"],
    ["move", "0", "1", "2", "3", "4", "--speed", "0"],
    ["depth", "0", "inf", "--speed", "1"],
    ["inside", "0", "maybe"],
    ["teleport", "0"],
])
def test_bad_arguments_exit_2_before_connecting(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["manipulators", "sio://127.0.0.1:1", *argv])
    assert exit_info.value.code == 2
    assert "rigdeck manipulators" in capsys.readouterr().err


def test_token_from_env_or_file_and_refusal_without_it(capsys, monkeypatch, tmp_path):
    with served_in_thread(options={"token": "t0ken-42"}) as (_, server, _sim):
        monkeypatch.delenv("RIGDECK_SIO_TOKEN", raising=False)
        code, out, err = cli(capsys, uri(server), "list")
        assert code == 2 and "token required" in err and "t0ken" not in err
        monkeypatch.setenv("RIGDECK_SIO_TOKEN", "wrong")
        assert cli(capsys, uri(server), "list")[0] == 2
        monkeypatch.setenv("RIGDECK_SIO_TOKEN", "t0ken-42")
        assert cli(capsys, uri(server), "list") == (0, "0\n1\n", "")
        monkeypatch.delenv("RIGDECK_SIO_TOKEN")
        token_file = tmp_path / "token"
        token_file.write_text("t0ken-42\n")
        assert cli(capsys, uri(server), "list", "--token-file", str(token_file))[0] == 0
        code, _, err = cli(capsys, uri(server), "list", "--token-file", str(tmp_path / "missing"))
        assert code == 2 and "cannot read token file" in err


def test_an_observer_cannot_move_until_it_takes_control(capsys):
    with served_in_thread() as (loop, server, sim):
        controller = socketio.AsyncClient(reconnection=False)
        notices: list[bool] = []
        controller.on("control", lambda data: notices.append(json.loads(data)["Controller"]))
        loop.call(controller.connect(url(server.port), transports=["websocket"]))
        try:
            code, _, err = cli(capsys, uri(server), "move", "1", "1", "0", "0", "0", "--speed", "100")
            assert code == 1 and "NotInControl: this client is an observer" in err
            assert cli(capsys, uri(server), "position", "1")[0] == 0  # observers still read
            code, out, _ = cli(capsys, uri(server), "move", "1", "1", "0", "0", "0", "--speed", "100", "--take-control")
            assert code == 0 and out.startswith("1  x=1.0000")
            # the old controller was told it lost control, and got it back when the CLI left
            wait_until_blocking(lambda: notices == [False, True], what="control notices")
            reply = loop.call(controller.call("set_position", body(ManipulatorId="1", Position={"x": 2}, Speed=100)))
            assert json.loads(reply)["Error"] == ""
        finally:
            loop.call(controller.disconnect())


def test_stop_halts_a_move_in_progress_where_it_is(capsys):
    with served_in_thread() as (loop, server, sim):
        move = loop.spawn(sim.set_position("1", Vec4(20, 0, 0, 0), 4.0))  # 5 s
        wait_until_blocking(lambda: loop.check(lambda: sim.is_moving("1")), what="move start")
        code, out, _ = cli(capsys, "--json", uri(server), "stop", "1")
        assert code == 0 and one_json(out) == {"id": "1", "stopped": True}
        halted = move.result(5)
        assert 0 < halted.x < 20 and not loop.check(lambda: sim.is_moving("1"))
        assert loop.call(sim.position("1")) == halted


def test_stop_all_from_the_command_line_halts_8_moving_streaming_manipulators(capsys):
    """Deliverable 6 end to end: a controller moves 8 manipulators, two observers stream the pushes, and a
    separate ``rigdeck manipulators stop-all`` (an observer too) halts every one mid-move, where it is."""
    ids = [str(i) for i in range(8)]
    with served_in_thread(ids=ids, options={"push_hz": 50}) as (loop, server, sim):
        controller = socketio.AsyncClient(reconnection=False)
        observers = [socketio.AsyncClient(reconnection=False) for _ in range(2)]
        pushes = [0, 0]
        for n, observer in enumerate(observers):
            observer.on("position", lambda data, n=n: pushes.__setitem__(n, pushes[n] + 1))
        for client in (controller, *observers):
            loop.call(client.connect(url(server.port), transports=["websocket"]))
        try:
            moves = [loop.spawn(controller.call("set_position", body(
                ManipulatorId=i, Position={"x": 20, "y": 20, "z": 20, "w": 20}, Speed=2), timeout=60)) for i in ids]
            wait_until_blocking(lambda: loop.check(lambda: all(sim.is_moving(i) for i in ids)), what="8 moving")
            wait_until_blocking(lambda: min(pushes) > 5, what="observers streaming")
            code, out, err = cli(capsys, uri(server), "stop-all")
            assert (code, out, err) == (0, "stopped all\n", "")
            assert not loop.check(lambda: any(sim.is_moving(i) for i in ids))
            replies = [json.loads(m.result(5)) for m in moves]
            assert all("did not reach target" in r["Error"] for r in replies)
            halted = [loop.call(sim.position(i)) for i in ids]
            assert all(0 < p.x < 20 and p.x == p.y == p.z == p.w for p in halted)  # mid-move, on the line
            assert [Vec4(**r["Position"]) for r in replies] == halted  # each move reports where it halted
            time.sleep(0.05)  # a short look for what must NOT happen: a stage moving on
            assert [loop.call(sim.position(i)) for i in ids] == halted
        finally:
            for client in (controller, *observers):
                loop.call(client.disconnect())


def test_watch_prints_the_snapshot_then_pushed_positions(capsys):
    with served_in_thread(ids=("0",)) as (loop, server, sim):
        loop.spawn(sim.set_position("0", Vec4(0, 4, 0, 0), 5.0))  # 0.8 s: pushes at 50 Hz
        wait_until_blocking(lambda: loop.check(lambda: sim.is_moving("0")), what="move start")
        code, out, _ = cli(capsys, "--json", uri(server), "watch", "--count", "6")
        lines = [json.loads(line) for line in out.strip().splitlines()]
        assert code == 0 and len(lines) == 6 and all(line["id"] == "0" for line in lines)
        ys = [line["position"]["y"] for line in lines]
        # the first line is the connect-time snapshot; a push already in flight may be a little older
        assert ys[1:] == sorted(ys[1:]) and ys[-1] > ys[0] and lines[-1]["moving"] is True
        loop.call(sim.stop_all())


def test_against_an_ephys_link_server_the_cli_polls_and_shows_its_errors(capsys):
    with served_in_thread(ephys_link=True) as (loop, server, sim):
        info = one_json(cli(capsys, uri(server), "info", "--json")[1])
        assert info["server"] == "ephys-link" and info["push"] is False and info["controller"] is None
        assert info["manipulators"] == ["0", "1"]
        assert cli(capsys, f"http://127.0.0.1:{server.port}", "list") == (0, "0\n1\n", "")
        code, out, _ = cli(capsys, uri(server), "move", "1", "2", "0", "0", "0", "--speed", "10")
        assert code == 0 and out == "1  x=2.0000 y=0.0000 z=0.0000 w=0.0000\n"
        loop.spawn(sim.set_position("0", Vec4(0, 0, 2, 0), 4.0))  # 0.5 s
        code, out, _ = cli(capsys, uri(server), "--poll-hz", "50", "watch", "--count", "5", "--json")
        lines = [json.loads(line) for line in out.strip().splitlines()]
        assert code == 0 and {line["id"] for line in lines} == {"0", "1"}
        assert any(line["id"] == "0" and line["moving"] for line in lines)
        assert server.calls.count("get_position") >= 3
        code, _, err = cli(capsys, uri(server), "stop", "5")
        assert code == 1 and "unknown manipulator '5'" in err
        other = socketio.AsyncClient(reconnection=False)  # ephys-link serves one client at a time
        loop.call(other.connect(url(server.port), transports=["websocket"]))
        try:
            code, _, err = cli(capsys, uri(server), "list")
            assert code == 2 and "refused by server" in err and "is Pinpoint connected?" in err
        finally:
            loop.call(other.disconnect())


def run_cli_process(*argv: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("RIGDECK_SIO_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "app.cli", "manipulators", *argv], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_real_process_prints_one_line_errors_and_ctrl_c_stops_its_move():
    with served_in_thread() as (loop, server, sim):
        proc = run_cli_process(uri(server), "position", "nope")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1 and out == ""
        assert err == "rigdeck manipulators: ManipulatorError: unknown manipulator 'nope' (known: 0, 1)\n"
        proc = run_cli_process(uri(server), "move", "0", "20", "0", "0", "0", "--speed", "2")  # 10 s
        try:
            wait_until_blocking(lambda: loop.check(lambda: sim.is_moving("0")), timeout=30, what="the process's move")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 130 and "interrupted: stopped manipulator 0" in err and "Traceback" not in err
        assert not loop.check(lambda: sim.is_moving("0"))
        assert 0 < loop.call(sim.position("0")).x < 20
