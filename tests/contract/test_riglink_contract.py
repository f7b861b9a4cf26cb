"""The RigLink contract, one set of tests run against every scheme (udp, tcp, zmq, sio, rpc).

The session engine sees only RigLinks, so what it relies on must hold for each transport alike: connect
never fails because a rig is down, a request gets its reply, a silent rig gives a RequestTimeout (a
RigError) and a garbled one a RigError (never a hang, never a dead link), a rig that comes back is
online again on the same link, close fails what is pending with LinkClosed, and listeners can be
removed. Each case runs against a real server on loopback (see ``contract_rigs.py``).

Where a scheme legitimately differs the test says so: ``sio://`` is a manipulator link whose
``request(EXPSTATUS)`` is a ``get_version`` round trip and which cannot time out a request it could not
send (it answers "not connected" at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from contract_rigs import SCHEMES, TIMEOUT, SchemeRigs, free_port
from helpers import run, wait_until

from core.link import LinkClosed, LinkState, RemoteError, RequestTimeout, RigError, RigLink
from core.protocol import ExpMessage, ExpStatus
from transports.registry import TRANSPORTS, make_link


def test_the_contract_covers_every_registered_scheme():
    """A transport added to the registry must be added here too (its rigs in ``contract_rigs.py``)."""
    assert sorted(SCHEMES) == sorted(t.scheme for t in TRANSPORTS)


scheme_cases = pytest.mark.parametrize("scheme", SCHEMES)

#: a rig that was down and is up again must be answered within this (a ceiling, not a speed test)
COMES_BACK = 20.0


def rigs_for(scheme: str) -> SchemeRigs:
    return SchemeRigs(scheme, free_port(socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM))


class linked:  # noqa: N801 - used like a function: ``async with linked(rigs) as link``
    """A connected link to ``rigs``, closed on exit whatever the test did to it."""

    def __init__(self, rigs: SchemeRigs, **options: object) -> None:
        self.link = make_link(rigs.spec(**options))

    async def __aenter__(self) -> RigLink:
        await self.link.connect()
        return self.link

    async def __aexit__(self, *exc: object) -> None:
        await self.link.close()


@contextlib.asynccontextmanager
async def serving(rigs: SchemeRigs) -> AsyncIterator[None]:
    """The scheme's real server on the rigs' port, closed on exit."""
    server = await rigs.serve()
    try:
        yield
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def online(scheme: str) -> AsyncIterator[RigLink]:
    """A real rig of ``scheme`` and a link to it that has had a first reply (links may still handshake
    after connect(): the first requests wait for it or fail as RigErrors)."""
    rigs = rigs_for(scheme)
    async with serving(rigs), linked(rigs) as link:
        await wait_until(answers(link), what=f"{scheme}: a first reply")
        yield link


async def status(link: RigLink, timeout: float = TIMEOUT) -> int:
    return (await link.request(ExpMessage.EXPSTATUS, int(ExpStatus.CONNECTED), timeout=timeout))[0]


def answers(link: RigLink) -> Callable[[], object]:
    """A wait_until condition: one request gets its reply (a RigError meanwhile counts as "not yet")."""

    async def check() -> bool:
        try:
            return await status(link) == int(ExpStatus.CONNECTED)
        except RigError:
            return False

    return check


def fails(link: RigLink) -> Callable[[], object]:
    """A wait_until condition: a request fails with a RigError (a link may notice a lost rig late)."""

    async def check() -> bool:
        try:
            await status(link)
        except RigError:
            return True
        return False

    return check


# --------------------------------------------------------------------------------------------- cases
@scheme_cases
def test_connect_then_request_gets_the_reply_and_the_link_is_online(scheme):
    async def main():
        rigs = rigs_for(scheme)
        async with serving(rigs), linked(rigs) as link:
            assert link.state in (LinkState.CONNECTING, LinkState.ONLINE)
            # a link may still be handshaking: the first request waits for it, or fails as a RigError
            await wait_until(answers(link), what=f"{scheme}: a first reply")
            assert await status(link) == int(ExpStatus.CONNECTED)
            info = await link.request(ExpMessage.EXPINFO, {}, timeout=TIMEOUT)
            assert info[0] == int(ExpStatus.CONNECTED) and info[1]["main_sync"] is False
            assert link.state is LinkState.ONLINE and link.last_rtt is not None

    run(main())


@scheme_cases
def test_connect_to_a_rig_that_is_down_does_not_raise_and_requests_fail_as_rig_errors(scheme):
    async def main():
        rigs = rigs_for(scheme)
        async with linked(rigs) as link:  # nothing listens on the port
            with pytest.raises(RigError):
                await status(link)
            await wait_until(lambda: link.state is LinkState.UNREACHABLE, what=f"{scheme}: unreachable")

    run(main())


@scheme_cases
def test_concurrent_requests_each_get_their_own_reply(scheme):
    async def main():
        async with online(scheme) as link:
            replies = await asyncio.gather(*(link.request(ExpMessage.EXPINFO, {"tag": n}, timeout=TIMEOUT)
                                             for n in range(5)))
            if scheme == "sio":
                # sio differs: EXPINFO is answered by the link from a get_version round trip, so
                # nothing of the request reaches a rig to be echoed; each still gets a whole reply
                assert all(reply[1]["role"] == "manipulator" for reply in replies)
            else:
                assert [reply[1]["tag"] for reply in replies] == list(range(5))

    run(main())


@scheme_cases
def test_an_error_report_is_a_remote_error_and_the_link_stays_online(scheme):
    async def main():
        async with online(scheme) as link:
            if scheme == "sio":
                # sio differs: a manipulator rig takes no session messages, and the link says so itself
                with pytest.raises(RigError, match="manipulator rigs take no session messages"):
                    await link.request(ExpMessage.EXPEND, [], timeout=TIMEOUT)
            else:
                with pytest.raises(RemoteError, match="no session to end"):
                    await link.request(ExpMessage.EXPEND, [], timeout=TIMEOUT)
            assert link.state is LinkState.ONLINE
            assert await status(link) == int(ExpStatus.CONNECTED)

    run(main())


@scheme_cases
def test_a_rig_that_does_not_answer_gives_a_request_timeout(scheme):
    async def main():
        rigs = rigs_for(scheme)
        server = await rigs.serve_silent()
        try:
            async with linked(rigs) as link:
                if scheme == "sio":
                    # sio differs: it connects first (the silent rig identifies itself), and only then can a
                    # request be sent; before that it is refused at once as "not connected"
                    await wait_until(lambda: link.state is LinkState.ONLINE, what="sio: connected")
                with pytest.raises(RequestTimeout):
                    await status(link, timeout=0.5)
                assert rigs.held() >= 1, "the request reached the rig (which held the reply)"
                assert link.state is not LinkState.CLOSED
        finally:
            rigs.service.gate.set()
            await server.close()

    run(main())


@scheme_cases
def test_a_rig_that_went_away_is_unreachable_then_online_again_on_the_same_port(scheme):
    async def main():
        rigs = rigs_for(scheme)
        server = await rigs.serve()
        async with linked(rigs) as link:
            await wait_until(answers(link), what=f"{scheme}: a first reply")
            await server.close()
            await wait_until(fails(link), what=f"{scheme}: requests failing once the rig is gone")
            await wait_until(lambda: link.state is LinkState.UNREACHABLE, what=f"{scheme}: unreachable")
            async with serving(rigs):  # the rig PC rebooted: same port, new process
                await wait_until(answers(link), timeout=COMES_BACK, what=f"{scheme}: a reply after the restart")
                assert link.state is LinkState.ONLINE

    run(main())


@scheme_cases
def test_close_fails_the_pending_request_with_link_closed_and_refuses_later_ones(scheme):
    async def main():
        rigs = rigs_for(scheme)
        server = await rigs.serve_silent()
        try:
            link = make_link(rigs.spec(timeout=30.0))
            await link.connect()
            await wait_until(lambda: link.state is not LinkState.CONNECTING or scheme == "udp",
                             what=f"{scheme}: connected")
            pending = asyncio.ensure_future(status(link, timeout=30.0))
            await wait_until(lambda: rigs.held() >= 1, what=f"{scheme}: the request at the rig")
            await link.close()
            with pytest.raises(LinkClosed):
                await asyncio.wait_for(pending, TIMEOUT)
            assert link.state is LinkState.CLOSED
            with pytest.raises(LinkClosed):
                await status(link)
        finally:
            rigs.service.gate.set()
            await server.close()

    run(main())


@scheme_cases
def test_a_listener_can_be_unsubscribed(scheme):
    async def main():
        rigs = rigs_for(scheme)
        async with serving(rigs):
            link = make_link(rigs.spec())
            kept: list[LinkState] = []
            dropped: list[LinkState] = []
            link.on_state(lambda state, _error: kept.append(state))
            unsubscribe = link.on_state(lambda state, _error: dropped.append(state))
            unsubscribe()
            assert callable(link.on_update(lambda mod: None))  # update listeners come from the same helper
            await link.connect()
            await wait_until(answers(link), what=f"{scheme}: a first reply")
            await link.close()
            assert LinkState.ONLINE in kept and kept[-1] is LinkState.CLOSED
            assert dropped == []

    run(main())


@scheme_cases
def test_a_garbled_reply_is_a_rig_error_and_the_link_survives_it(scheme):
    async def main():
        rigs = rigs_for(scheme)
        garbage = await rigs.serve_garbage()
        async with linked(rigs) as link:
            try:
                with pytest.raises(RigError):
                    await status(link, timeout=0.5)
                with pytest.raises(RigError):  # and again: nothing got stuck
                    await status(link, timeout=0.5)
                assert link.state is not LinkState.CLOSED
            finally:
                await garbage.close()
            async with serving(rigs):  # the same link talks to a sane rig on that port afterwards
                await wait_until(answers(link), timeout=COMES_BACK, what=f"{scheme}: a reply from the sane rig")
                assert link.state is LinkState.ONLINE

    run(main())
