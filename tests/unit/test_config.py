"""remote_rigs.yaml loading: both forms, and one clear error per kind of bad file."""

from pathlib import Path

import pytest

from core.config import ConfigError, Role, load_rigs, save_rigs

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def write(tmp_path, text):
    p = tmp_path / "rigs.yaml"
    p.write_text(text)
    return p


def test_shipped_example_loads():
    rigs = load_rigs(RESOURCES / "remote_rigs.yaml")
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
    ],
)
def test_bad_files_name_file_rig_and_problem(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_rigs(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such rigs file"):
        load_rigs(tmp_path / "nope.yaml")


def test_save_round_trip_keeps_forms(tmp_path):
    path = write(tmp_path, "a: 10.0.0.1\nb: {uri: zmq://10.0.0.2:5555, role: main_sync, timeout: 3}\n")
    rigs = load_rigs(path)
    out = tmp_path / "out.yaml"
    save_rigs(out, rigs)
    again = load_rigs(out)
    assert {n: (s.uri, s.role, dict(s.options)) for n, s in again.items()} == {
        n: (s.uri, s.role, dict(s.options)) for n, s in rigs.items()
    }
    assert out.read_text().startswith("a: udp://10.0.0.1:11001\n")
