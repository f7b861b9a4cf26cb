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


#: every form iblutil's validate_uri accepts (with host resolution), odd ones included
IBLUTIL_FORMS = [
    "192.168.0.1", "localhost:1234", "tcp://192.168.0.1", "udp://10.1.2.3:5000", "ws://1.2.3.4", "UDP://1.2.3.4",
    "localhost", "udp://localhost", "1.2.3.4:", "localhost:", ":5", "udp://:5", "", "1.2.3", "1.2.3.4:+5",
    "1.2.3.4: 5", "1.2.3.4:65535", "tcp://localhost:99", ipaddress.IPv4Address("10.0.0.1"),
]


@pytest.mark.parametrize("uri", IBLUTIL_FORMS, ids=repr)
def test_validate_uri_gives_iblutils_result_for_every_form_iblutil_accepts(uri):
    from iblutil.io.net import base  # the real iblutil (test extra); never skipped

    assert validate_uri(uri) == base.validate_uri(uri)


@pytest.mark.parametrize("uri", ["rig-a", "rig-a:99", "localhost:", "10.1.2.3:7", "tcp://rig-b"])
def test_validate_uri_without_resolution_matches_iblutil(uri):
    from iblutil.io.net import base

    assert validate_uri(uri, resolve_host=False) == base.validate_uri(uri, resolve_host=False)


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("cams.lab.example.org:9", "udp://cams.lab.example.org:9"),  # iblutil refuses dots here
        ("Cams.Lab.Example.org", "udp://cams.lab.example.org:11001"),
        ("tcp://rig-a.local.:7", "tcp://rig-a.local.:7"),
        ("[fe80::1]", "udp://[fe80::1]:11001"),
        ("[::1]:", "udp://[::1]:11001"),
        ("udp://[2001:db8::5]:11002", "udp://[2001:db8::5]:11002"),
        (ipaddress.IPv6Address("::1"), "udp://[::1]:11001"),  # iblutil: 'udp://::1:11001', ambiguous
    ],
)
def test_dotted_hostnames_and_ipv6_literals(uri, expected):
    assert validate_uri(uri, resolve_host=False) == expected


def test_dotted_hostnames_go_to_the_resolver():
    with pytest.raises(ValueError, match="Cannot resolve host 'no-such-rig.invalid'"):
        validate_uri("no-such-rig.invalid:5")


@pytest.mark.parametrize(
    "uri, words",
    [
        ("1.2.3.4:0", "port number 0"),  # iblutil says "Invalid port number: 11001"
        ("udp://rig-a:0", "Invalid port number 0 in URI 'udp://rig-a:0'"),
        ("[::1]:0", "port number 0"),
        ("1.2.3.4:70000", "port number 70000"),
        ("1.2.3.4:-5", "port number -5"),
        ("1.2.3.4:abc", "'abc'"),
        ("300.1.1.1", "Invalid IPv4 address '300.1.1.1'"),
        ("1.2.3", "Invalid IPv4 address '1.2.3'"),
        ("::1:9000:x", r"IPv6 with a port needs \[brackets\]"),
        ("[::1]9000", "Unexpected '9000' after IPv6 address"),
        ("[::g]:9000", "Invalid IPv6 address '::g'"),
        (":5", "No host"),
        ("foo.-bar", "Invalid hostname 'foo.-bar'"),
        ("udp://1.2.3.4:1/path", "path"),
        ("[::1:9", "Unclosed"),
        ("bad_host!", "hostname"),
        ("", "Empty"),
    ],
)
def test_validate_uri_errors_say_what_is_wrong(uri, words):
    with pytest.raises(ValueError, match=words):
        validate_uri(uri, resolve_host=False)


def test_port_0_by_default_port_says_so():
    with pytest.raises(ValueError, match="Invalid default port number 0"):
        validate_uri("1.2.3.4", default_port=0)


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
