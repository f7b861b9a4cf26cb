"""remote_rigs.yaml loading: both forms, and one clear error per kind of bad file."""

from pathlib import Path

import pytest

from core.config import ConfigError, Role, load_rigs, save_rigs
from transports.registry import TRANSPORTS

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def write(tmp_path, text):
    p = tmp_path / "rigs.yaml"
    p.write_text(text)
    return p


def test_shipped_example_loads():
    rigs = load_rigs(RESOURCES / "remote_rigs.yaml", TRANSPORTS)
    assert rigs["neuropixel"].uri == "udp://10.0.0.6:11001"
    assert rigs["cameras:left"].scheme == "tcp"
    assert rigs["timeline"].role is Role.MAIN_SYNC and rigs["timeline"].options["timeout"] == 2.0
    assert rigs["laser"].address.path == "laser" and not rigs["laser"].enabled
    assert rigs["probes"].role is Role.MANIPULATOR and not rigs["probes"].in_sessions


@pytest.mark.parametrize(
    "text, words",
    [
        ("a: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: 1.2.3.4\na: 1.2.3.5\n", "duplicate name 'a'"),
        ("a: 1.2.3.4:0\n", "rig 'a': Invalid port number 0"),
        ("a: {uri: 1.2.3.4, colour: red}\n", "rig 'a': unknown key"),
        ("a: ftp://1.2.3.4\n", "rig 'a': unknown scheme 'ftp'"),
        ("a: {uri: 1.2.3.4, role: boss}\n", "rig 'a': unknown role"),
        ("a: {uri: 1.2.3.4, timeout: -1}\n", "timeout must be a positive"),
        ("a: rpc://1.2.3.4:5\n", "name a target"),
        ("a:\n", "no URI"),
        ("a: {uri: 1.2.3.4, role: main_sync}\nb: {uri: 1.2.3.5, role: main_sync}\n", "several rigs"),
        ("a: 1.2.3.4\nb: 300.1.2.3\n", "rig 'b': Invalid IPv4 address '300.1.2.3'"),
        ("a: '[::1]:0'\n", "rig 'a': Invalid port number 0"),
        ("'cameras:left': udp://cams.lab:70000\n", "rig 'cameras:left': Invalid port number 70000"),
        ("a: {uri: 1.2.3.4, echo_timeout: fast}\n", "rig 'a': echo_timeout must be a positive number"),
        ("a: {uri: 1.2.3.4, retry_after: 0}\n", "rig 'a': retry_after must be a positive number"),
        ("a: {uri: 1.2.3.4, enabled: 'no'}\n", "rig 'a': enabled must be true or false"),
        ("a: {uri: 1.2.3.4, description: [x]}\n", "rig 'a': description must be a string"),
        ("a: {uri: 1.2.3.4, notifier: state}\n", "rig 'a': option(s) ['notifier'] do not apply to udp:// rigs"),
        ("a: {uri: 1.2.3.4, token: t}\n", "token is for sio:// rigs"),
        ("a: {uri: 'sio://1.2.3.4', server_key: k.key}\n", "server_key is for zmq:// rigs"),
        ("a: {uri: 'rpc://1.2.3.4:5/t', notifier: 'two words'}\n", "rig 'a': notifier expected 'name' or"),
        ("a: {uri: 'rpc://1.2.3.4:5/t', notifier: '99999/x'}\n", "'99999' is not a TCP port"),
        ("a: {uri: 'zmq://1.2.3.4', hwm: 1.5}\n", "rig 'a': hwm must be a positive whole number"),
        ("a: {uri: 'tcp://1.2.3.4', write_gap: -1}\n", "rig 'a': write_gap must be a number of seconds >= 0"),
        ("a: {uri: 1.2.3.4, write_gap: 0}\n", "write_gap is for tcp:// rigs"),
        ("a: {uri: 'sio://1.2.3.4', token: ''}\n", "rig 'a': token must be a non-empty string"),
        ("a: {uri: [1, 2]}\n", "rig 'a': uri must be a string"),
        ("a: {role: aux}\n", "rig 'a': missing 'uri'"),
        ("a: 5\n", "rig 'a': expected a URI string or a mapping"),
        ("a: ''\n", "rig 'a': Empty URI"),
        ("a: 'udp://1.2.3.4/x'\n", "rig 'a': URI 'udp://1.2.3.4/x' has a path"),
        ("a: !!python/object:os.system x\n", "not valid YAML"),
        ("[a, b]: 1.2.3.4\n", "name ['a', 'b'] (line 1) must be a string, not a list"),
        ("{a: 1}: 1.2.3.4\n", "must be a string, not a dict"),
        ("1: 1.2.3.4\n", "rig name 1 must be a non-empty string"),
        ("a: {uri: 1.2.3.4, uri: 1.2.3.5}\n", "duplicate name 'uri' (line 1)"),
    ],
)
def test_bad_files_name_file_rig_and_problem(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_rigs(path, TRANSPORTS)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such rigs file"):
        load_rigs(tmp_path / "nope.yaml", TRANSPORTS)


def test_save_round_trip_keeps_forms(tmp_path):
    path = write(tmp_path, "a: 10.0.0.1\nb: {uri: zmq://10.0.0.2:5555, role: main_sync, timeout: 3}\n")
    rigs = load_rigs(path, TRANSPORTS)
    out = tmp_path / "out.yaml"
    save_rigs(out, rigs)
    again = load_rigs(out, TRANSPORTS)
    assert {n: (s.uri, s.role, dict(s.options)) for n, s in again.items()} == {
        n: (s.uri, s.role, dict(s.options)) for n, s in rigs.items()
    }
    assert out.read_text().startswith("a: udp://10.0.0.1:11001\n")


def test_nothing_is_half_loaded(tmp_path):
    """A good file, then the same file with one bad rig at the end: the second load gives no rigs at all,
    and what the caller already had is untouched (load_rigs builds a new mapping or raises)."""
    good = "a: 10.0.0.1\nb: {uri: tcp://10.0.0.2, role: main_sync}\n"
    path = write(tmp_path, good)
    rigs = load_rigs(path, TRANSPORTS)
    path.write_text(good + "c: {uri: 10.0.0.3, colour: red}\n")
    result = None
    with pytest.raises(ConfigError, match="rig 'c'"):
        result = load_rigs(path, TRANSPORTS)
    assert result is None and list(rigs) == ["a", "b"]


def test_every_documented_option_is_accepted_where_it_applies(tmp_path):
    path = write(tmp_path, """\
udp_rig: {uri: 10.0.0.1, timeout: 2, poll_interval: 0.5, echo_timeout: 1.5, retry_after: 0.1,
          late_window: 4, description: cameras, enabled: true}
zmq_rig: {uri: 'zmq://10.0.0.2', server_key: k.key, client_key: c.key_secret, heartbeat: 0.5, liveness: 3,
          retry_initial: 0.1, retry_max: 1, hwm: 1000, stream: false}
sio_rig: {uri: 'sio://10.0.0.3', role: manipulator, token: s3cret}
tcp_rig: {uri: 'tcp://10.0.0.5', write_gap: 0, echo_timeout: 2}
rpc_rig: {uri: 'rpc://10.0.0.4:3251/laser', notifier: 3250/laser_state}
""")
    rigs = load_rigs(path, TRANSPORTS)
    assert rigs["zmq_rig"].options["stream"] is False and rigs["rpc_rig"].options["notifier"] == "3250/laser_state"
    assert rigs["udp_rig"].options["late_window"] == 4 and rigs["sio_rig"].options["token"] == "s3cret"


def test_yaml_anchors_and_merge_keys_share_options(tmp_path):
    path = write(tmp_path, """\
cams: &udp_rig {uri: 10.0.0.1, timeout: 2, echo_timeout: 0.5}
ephys: {<<: *udp_rig, uri: 10.0.0.2, timeout: 3}
""")
    rigs = load_rigs(path, TRANSPORTS)
    assert rigs["ephys"].uri == "udp://10.0.0.2:11001"
    assert dict(rigs["ephys"].options) == {"timeout": 3, "echo_timeout": 0.5}


def test_key_file_options_are_relative_to_the_rigs_file(tmp_path, monkeypatch):
    from core.config import load_rigs

    rigs = tmp_path / "lab" / "remote_rigs.yaml"
    rigs.parent.mkdir()
    rigs.write_text("cams: {uri: 'zmq://127.0.0.1:11002', server_key: keys/cams.key, client_key: /abs/me.key_secret}\n")
    monkeypatch.chdir(tmp_path)  # not the rigs file's folder
    spec = load_rigs(rigs, TRANSPORTS)["cams"]
    assert spec.path_option("server_key") == rigs.parent.resolve() / "keys" / "cams.key"
    assert str(spec.path_option("client_key")) == "/abs/me.key_secret"
    assert spec.path_option("hwm") is None
