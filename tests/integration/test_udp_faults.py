"""A console and a real ``rigdeck serve`` rig talking iblutil UDP through a relay that drops, duplicates
and delays 20 % of the datagrams each way: 100 EXPINITs with distinct references, each run exactly once
and in order, counted from the rig's own record of what it ran (its session folders)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from helpers import run
from rigprocs import rig_processes
from udp_faults import Faults, FaultyRelay

from core.config import parse_rig
from core.link import RequestTimeout
from core.protocol import ExpMessage
from core.service import COMMANDS_FILE
from transports.ibl.udp import UdpLink
from transports.registry import TRANSPORTS

REQUESTS = 100
FAULTS = Faults(drop=0.2, duplicate=0.2, delay=0.2, max_delay=0.2)


def _commands_run(data_dir: Path) -> list[dict]:
    """Every command the rig recorded, in the order it ran them."""
    lines = [json.loads(line) for path in data_dir.rglob(COMMANDS_FILE) for line in path.open(encoding="utf-8")]
    return sorted(lines, key=lambda line: line["n"])


def test_expinits_through_drop_duplicate_and_delay_each_run_once_and_in_order(tmp_path: Path) -> None:
    refs = [f"2026-11-30_{n}_FLT" for n in range(1, REQUESTS + 1)]
    with rig_processes(tmp_path / "rigs", {"rig": {}}) as cluster:
        address = cluster.specs["rig"].address

        async def main() -> tuple[list, FaultyRelay, object]:
            relay = FaultyRelay((address.host, address.port), to_rig=FAULTS, to_console=FAULTS, seed=14)
            port = await relay.start()
            # short timings keep the test to a few seconds: resends from 30 ms, and a lost first status
            # (sent once: the rig is not known to be RigDeck yet) fails and is asked again sooner
            options = {"timeout": 10, "retry_after": 0.03, "echo_timeout": 0.3, "late_window": 0.3}
            link = UdpLink(parse_rig("rig", {"uri": f"udp://127.0.0.1:{port}", **options}, TRANSPORTS))
            await link.connect()
            conversation = link.endpoint.conversation(link.endpoint.remote)
            try:
                # as the rig monitor does: ask for the status until a reply has shown the rig is RigDeck
                while not conversation.rigdeck_peer:
                    try:
                        await link.request(ExpMessage.EXPSTATUS, 0, timeout=1)
                    except RequestTimeout:
                        pass
                replies = [await link.request(ExpMessage.EXPINIT, {"exp_ref": ref}) for ref in refs]
                # and then silence: no echo bouncing, nothing resent (a ping-pong adds thousands a second)
                await asyncio.sleep(0.5)
                before = relay.rig_counts.received + relay.console_counts.received
                await asyncio.sleep(0.5)
                assert relay.rig_counts.received + relay.console_counts.received == before
                return replies, relay, conversation.stats
            finally:
                await link.close()
                relay.close()

        replies, relay, stats = run(main(), timeout=120)
        assert replies == [[{"status": 10, "exp_ref": ref}] for ref in refs]
        ran = [line["exp_ref"] for line in _commands_run(cluster.data_dir("rig")) if line["event"] == "EXPINIT"]
        assert ran == refs  # each exactly once, in the order sent
    # the faults did happen, both ways, and the console had to resend
    for counts in (relay.rig_counts, relay.console_counts):
        assert counts.dropped and counts.duplicated and counts.delayed
    assert stats.retries > 0
