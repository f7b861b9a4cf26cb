"""A rig hands its Alyx token only to the peers ``alyx.allow`` names, on every transport that reaches its handler.

Real servers on loopback, real console links. Loopback is allowed by default, so refusals are shown with
allow lists a 127.0.0.1 client is not in (another address; ``session`` before that console ran the session),
and the default is shown with a second loopback host, 127.0.0.2, that runs no session. (sio:// serves only
a manipulator: its link answers ALYX itself and the rig's handler never sees the request.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket

import pytest
from helpers import run

from core.config import parse_rig
from core.link import RemoteError
from core.protocol import ExpMessage as M
from core.rig_config import parse_rig_config
from core.service import RigService
from transports.registry import TRANSPORTS, make_link, server_factory

SECRET = "alyx-s3cret-token"
BASE = "https://alyx.example.org"
REF = "2026-11-30_1_mouse"
GIVEN = [BASE, {"alice": {"token": SECRET}}]


async def serve_rig(scheme: str, tmp_path, allow: list[str] | None) -> tuple[RigService, object, str]:
    """A rig with a token in its rig file, served as ``rigdeck serve`` would; returns its console URI too."""
    path = "/rig" if scheme == "rpc" else ""
    alyx = {"base_url": BASE, "user": "alice", "token": SECRET, **({"allow": allow} if allow is not None else {})}
    config = parse_rig_config({"name": "holder", "uris": [f"{scheme}://127.0.0.1:0{path}"], "alyx": alyx,
                               "data_dir": str(tmp_path)}, TRANSPORTS, "holder.yaml")
    service = RigService.from_config(config)
    await service.start()
    spec = config.listen[0]
    handle = await server_factory(spec.scheme)(spec.address, service, dict(spec.options))
    return service, handle, f"{scheme}://127.0.0.1:{handle.port}{path}"


async def ask(link) -> list | str:
    """The rig's answer to "give me your token": the reply, or the error report's text."""
    try:
        return await link.request(M.ALYX, None, {}, timeout=3)
    except RemoteError as ex:
        return ex.text


@pytest.mark.parametrize("scheme", ["udp", "tcp", "zmq", "rpc"])
def test_the_token_goes_only_to_allowed_peers_and_the_console_running_the_session(scheme, tmp_path):
    async def with_rig(allow, body):
        service, handle, uri = await serve_rig(scheme, tmp_path, allow)
        link = make_link(parse_rig("holder", {"uri": uri, "timeout": 3}, TRANSPORTS))
        try:
            await link.connect()
            return await body(link)
        finally:
            await link.close()
            await handle.close()
            await service.close()

    async def once(link):
        return await ask(link)

    async def through_a_session(link):
        before = await ask(link)
        await link.request(M.EXPINIT, {"exp_ref": REF}, timeout=3)
        during = await ask(link)
        await link.request(M.EXPCLEANUP, None, timeout=3)
        return before, during, await ask(link)

    async def main():
        return (await with_rig(["10.9.9.9"], once), await with_rig(["127.0.0.0/8"], once),
                await with_rig(["session"], through_a_session))

    elsewhere, loopback_net, (before, during, after) = run(main(), timeout=60)
    assert isinstance(elsewhere, str) and elsewhere.startswith("AlyxRefused: rig holder does not hand its Alyx token")
    assert "127.0.0.1 is not allowed to have it (alyx.allow in the rig file: 10.9.9.9)" in elsewhere
    assert SECRET not in elsewhere
    assert loopback_net == GIVEN
    assert isinstance(before, str) and "not allowed" in before
    assert during == GIVEN  # this console sent the session's EXPINIT
    assert isinstance(after, str) and "not allowed" in after  # the session is over (EXPCLEANUP)


SENT = itertools.count(1)


def udp_exchange(sock: socket.socket, port: int, message: list) -> list:
    """Send one iblutil datagram from ``sock`` and return the rig's reply (skipping the echo of ours).
    Each datagram differs in its spacing: the rig takes a byte-identical one soon after as a duplicate."""
    raw = (json.dumps(message) + " " * next(SENT)).encode()
    sock.sendto(raw, ("127.0.0.1", port))
    while True:
        data, _ = sock.recvfrom(65536)
        if data != raw:
            return json.loads(data)


def test_session_means_the_host_that_ran_the_session_and_loopback_means_this_machine(tmp_path):
    """Every 127.x address is this machine, so hosts 127.0.0.2 (the console) and 127.0.0.3 (a stranger) tell the
    two default entries apart: with ``allow: [session]`` only the console gets the token, once it sent the
    session's EXPINIT (127.0.0.1, not the session's host, is refused too); by default (``[loopback, session]``)
    the stranger on this machine gets it as well."""

    async def main(allow):
        service, handle, uri = await serve_rig("udp", tmp_path / str(allow), allow)
        loop = asyncio.get_running_loop()
        socks = {}
        for host in ("127.0.0.2", "127.0.0.3"):
            socks[host] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks[host].bind((host, 0))
            socks[host].settimeout(5)

        def exchange(host, message):
            return loop.run_in_executor(None, udp_exchange, socks[host], handle.port, message)

        link = make_link(parse_rig("holder", {"uri": uri, "timeout": 3}, TRANSPORTS))
        await link.connect()
        try:
            seen = {"console before": await exchange("127.0.0.2", [int(M.ALYX), None, {}])}
            await exchange("127.0.0.2", [int(M.EXPINIT), {"exp_ref": REF}])
            seen["console during"] = await exchange("127.0.0.2", [int(M.ALYX), None, {}])
            seen["stranger during"] = await exchange("127.0.0.3", [int(M.ALYX), None, {}])
            seen["127.0.0.1 during"] = await ask(link)
            return seen
        finally:
            await link.close()
            for sock in socks.values():
                sock.close()
            await handle.close()
            await service.close()

    session_only, default = run(main(["session"]), timeout=40), run(main(None), timeout=40)
    given = [int(M.ALYX), *GIVEN]
    for key in ("console before", "stranger during"):
        host = "127.0.0.3" if key.startswith("stranger") else "127.0.0.2"
        refused = session_only[key]
        assert refused[0] == 0 and refused[2] == int(M.ALYX), refused
        assert f"{host} is not allowed to have it (alyx.allow in the rig file: session)" in refused[1]
    assert session_only["console during"] == given
    assert "127.0.0.1 is not allowed" in session_only["127.0.0.1 during"]
    assert default == {"console before": given, "console during": given, "stranger during": given,
                       "127.0.0.1 during": GIVEN}


@pytest.mark.parametrize("allow, words", [("10.0.0.5", "alyx.allow must be a list"),
                                          (["no-such-host.invalid"], "'no-such-host.invalid' is neither")])
def test_a_bad_alyx_allow_is_refused_at_load_naming_the_file(allow, words):
    from core.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_rig_config({"name": "r", "uris": ["udp://127.0.0.1:0"],
                          "alyx": {"base_url": BASE, "user": "alice", "token": SECRET, "allow": allow}},
                         TRANSPORTS, "r.yaml")
    assert str(info.value).startswith("r.yaml") and words in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize("peer, host", [("127.0.0.1:5000", "127.0.0.1"), ("[::1]:5000", "::1"), ("::1", "::1"),
                                        ("console-7@10.0.0.5", "10.0.0.5"), ("127.0.0.1@unknown", None),
                                        ("pc_rpc", None), ("connection 4", None)])
def test_every_peer_text_gives_its_host_and_a_name_never_passes_for_an_address(peer, host):
    """A zmq console chooses its own name: named "127.0.0.1" with no address known, it is not loopback."""
    from core.peers import peer_host

    assert peer_host(peer) == host
