"""rig.yaml: the documented example loads; bad files name the file and the problem."""

from pathlib import Path

import pytest

from core.config import ConfigError
from core.rig_config import load_rig_config, parse_listen_uri, parse_rig_config
from transports.registry import TRANSPORTS

ROOT = Path(__file__).resolve().parents[2]


def test_example_loads():
    cfg = load_rig_config(ROOT / "resources" / "rig_example.yaml", TRANSPORTS)
    assert cfg.name == "cameras"
    assert [s.uri for s in cfg.listen] == ["udp://127.0.0.1:11001"]
    assert [(r.name, r.kind, r.rate) for r in cfg.recorders] == [("left", "camera", 60.0), ("right", "camera", 30.0)]
    assert cfg.main_sync is False and cfg.manipulator is None and not cfg.fail_on


def test_full_form(tmp_path):
    cfg = parse_rig_config({
        "name": "probes",
        "uris": ["udp://127.0.0.1:0", {"uri": "sio://127.0.0.1:0", "token": "s3", "allow": "127.0.0.1"},
                 "rpc://127.0.0.1:0/rig"],
        "main_sync": True,
        "data_dir": "data",
        "drivers": {"recorders": {"p0": {"kind": "ephys", "rate": 2000}, "mic": "microphone"},
                    "manipulator": {"ids": [1, 2, 3], "dimensions": 15}},
        "fail_on": "EXPSTART",
        "delay_on": {"expinit": 0.5},
    }, TRANSPORTS, "x.yaml", tmp_path)
    assert [(s.scheme, s.address.port, s.address.path) for s in cfg.listen] == [
        ("udp", 0, ""), ("sio", 0, ""), ("rpc", 0, "rig")]
    assert cfg.listen[1].options == {"token": "s3", "allow": ["127.0.0.1"]}
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.manipulator == {"type": "simulated", "ids": ["1", "2", "3"], "dimensions": [15.0] * 4}
    assert cfg.fail_on == {"EXPSTART"} and cfg.delay_on == {"EXPINIT": 0.5}
    assert cfg.recorders[1].kind == "microphone"
    assert cfg.with_data_dir(tmp_path / "o").data_dir == tmp_path / "o"


def test_ephys_link_proxy_form():
    cfg = parse_rig_config({"name": "r", "uri": "sio://127.0.0.1:3000",
                            "drivers": {"manipulator": {"ephys_link": "sio://10.0.0.1:3000"}}}, TRANSPORTS)
    assert cfg.manipulator == {"ephys_link": "sio://10.0.0.1:3000", "type": "ephys_link"}


@pytest.mark.parametrize("data, match", [
    ({"uris": ["udp://127.0.0.1:1"]}, "'name' must be"),
    ({"name": "r"}, "'uris' must be a non-empty list"),
    ({"name": "r", "uris": ["ftp://h:1"]}, r"uris\[0\]: unknown scheme 'ftp'"),
    ({"name": "r", "uris": ["127.0.0.1:5"]}, r"uris\[0\]: .* needs a scheme"),
    ({"name": "r", "uris": ["udp://127.0.0.1:99999"]}, "Invalid port number 99999"),
    ({"name": "r", "uris": ["udp://127.0.0.1:5/x"]}, "has a path"),
    ({"name": "r", "uris": ["udp://127.0.0.1:5", "udp://127.0.0.1:5"]}, "listed twice"),
    ({"name": "r", "uris": [{"token": "x"}]}, "needs 'uri'"),
    ({"name": "r", "uris": ["udp://h:1"], "colour": "red"}, r"unknown key\(s\) \['colour'\]"),
    ({"name": "r", "uris": ["udp://h:1"], "main_sync": "yes"}, "'main_sync' must be true or false"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"recorders": {"c": {"kind": "lidar"}}}},
     "drivers.recorders.c: kind must be one of"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"recorders": {"c": {"kind": "camera", "rate": -1}}}},
     "drivers.recorders.c: rate -1 out of range"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"recorders": {"a/b": "camera"}}}, "recorder names"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"laser": {}}}, "drivers: unknown key"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"manipulator": {"ids": []}}}, "ids must be a non-empty"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"manipulator": {"dimensions": [1, 2]}}}, r"\[x, y, z, w\]"),
    ({"name": "r", "uris": ["udp://h:1"], "drivers": {"manipulator": {"type": "real"}}}, "must be 'simulated'"),
    ({"name": "r", "uris": ["udp://h:1"], "fail_on": ["EXPLODE"]}, "fail_on: Unrecognized event"),
    ({"name": "r", "uris": ["udp://h:1"], "delay_on": {"EXPSTART": "soon"}}, "must be a number"),
    ({"name": "r", "uris": ["udp://h:1"], "alyx": {"base_url": "u"}}, "'alyx' must be"),
])
def test_bad_config_names_file_and_problem(data, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_rig_config(data, TRANSPORTS, "bad.yaml")
    assert str(info.value).startswith("bad.yaml: ")


def test_bad_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such rig file"):
        load_rig_config(missing, TRANSPORTS)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty rig file"):
        load_rig_config(empty, TRANSPORTS)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rig_config(broken, TRANSPORTS)


def test_listen_uri_port_zero_and_ipv6():
    assert parse_listen_uri("udp://127.0.0.1:0", TRANSPORTS).port == 0
    assert parse_listen_uri("tcp://[::1]:0", TRANSPORTS).host == "::1"
    assert parse_listen_uri("zmq://localhost:7000", TRANSPORTS).host == "localhost"
    assert parse_listen_uri("udp://127.0.0.1", TRANSPORTS).port == 11001
