"""core.protocol against iblutil's documented results, and the extras RigDeck accepts."""

import datetime as dt
import ipaddress

import pytest

from core.protocol import ExpMessage, ExpStatus, format_exp_ref, parse_exp_ref, parse_uri, validate_uri


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("192.168.0.1", "udp://192.168.0.1:11001"),
        ("localhost:1234", "udp://127.0.0.1:1234"),
        ("tcp://192.168.0.1", "tcp://192.168.0.1:11001"),
        (ipaddress.IPv4Address("10.0.0.1"), "udp://10.0.0.1:11001"),
        ("[::1]:9000", "udp://[::1]:9000"),
        ("::1", "udp://[::1]:11001"),
    ],
)
def test_validate_uri_forms(uri, expected):
    assert validate_uri(uri) == expected


def test_validate_uri_matches_real_iblutil():
    base = pytest.importorskip("iblutil.io.net.base")
    for uri in ["192.168.0.1", "localhost:1234", "tcp://192.168.0.1", "udp://10.1.2.3:5000", "ws://1.2.3.4"]:
        assert validate_uri(uri) == base.validate_uri(uri)
    for uri in ["rig-a", "rig-a:99"]:
        assert validate_uri(uri, resolve_host=False) == base.validate_uri(uri, resolve_host=False)


def test_dotted_hostnames_without_resolution():
    assert validate_uri("cams.lab.example.org:9", resolve_host=False) == "udp://cams.lab.example.org:9"


@pytest.mark.parametrize(
    "uri, words",
    [
        ("1.2.3.4:0", "port number 0"),
        ("1.2.3.4:70000", "port number 70000"),
        ("1.2.3.4:abc", "'abc'"),
        ("udp://1.2.3.4:1/path", "path"),
        ("[::1:9", "Unclosed"),
        ("bad_host!", "hostname"),
        ("", "Empty"),
    ],
)
def test_validate_uri_errors_say_what_is_wrong(uri, words):
    with pytest.raises(ValueError, match=words):
        validate_uri(uri, resolve_host=False)


def test_validate_uri_type_error():
    with pytest.raises(TypeError):
        validate_uri(b"1.2.3.4")


def test_path_allowed_on_request():
    addr = parse_uri("rpc://127.0.0.1:3251/camera", allow_path=True)
    assert (addr.scheme, addr.host, addr.port, addr.path) == ("rpc", "127.0.0.1", 3251, "camera")


def test_expmessage_codes_and_validate():
    assert [int(m) for m in ExpMessage] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert ExpMessage.any() == 255
    assert ExpMessage.validate("expStart") is ExpMessage.EXPSTART
    assert ExpMessage.validate(32) is ExpMessage.EXPSTATUS
    assert ExpMessage.validate(True) is ExpMessage.EXPINIT
    assert ExpMessage.validate(3) == ExpMessage.EXPINIT | ExpMessage.EXPSTART
    with pytest.raises(ValueError):
        ExpMessage.validate(3, allow_bitwise=False)
    with pytest.raises(ValueError):
        ExpMessage.validate(256)
    with pytest.raises(ValueError):
        ExpMessage.validate("INIT")
    with pytest.raises(TypeError):
        ExpMessage.validate(32.0)


def test_expstatus():
    assert [int(s) for s in ExpStatus] == [0, 10, 20, 30]
    assert ExpStatus.coerce("running") is ExpStatus.RUNNING
    with pytest.raises(ValueError):
        ExpStatus.coerce(5)


def test_exp_refs_round_trip():
    ref = parse_exp_ref("2026-11-22_2_KS001")
    assert ref.date == dt.date(2026, 11, 22) and ref.sequence == 2 and ref.subject == "KS001"
    assert format_exp_ref({"date": "2026-11-22", "sequence": 12, "subject": "a_b"}) == "2026-11-22_12_a_b"
    assert str(parse_exp_ref("2026-01-02_3_sub_with_underscores")) == "2026-01-02_3_sub_with_underscores"


@pytest.mark.parametrize("bad", ["2026-11-22_KS001", "26-11-22_1_x", "2026-13-01_1_x", "", 5, {"date": "x"}])
def test_malformed_refs(bad):
    with pytest.raises(ValueError):
        parse_exp_ref(bad)
