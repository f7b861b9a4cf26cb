"""What the operator reads: plain sentences with the protocol detail kept apart, YAML errors that point at the
line, colours that can be read, and a STOP ALL report that says whether each probe really stopped."""

from __future__ import annotations

import asyncio

import pytest
from helpers import run, wait_until
from sio_helpers import LOOPBACK, url

from app.palette import (
    ALARM_CLOSED,
    ALARM_OPEN,
    LEVEL_COLOURS,
    LINK_COLOURS,
    PLOT_BACKGROUND,
    SERIES,
    STALE,
    TABLE_BACKGROUNDS,
    contrast,
)
from app.stop_all import StopAllReport, halt_and_confirm
from app.wording import plain, progress_words
from core.config import ConfigError, load_rigs
from core.drivers.manipulator import SimulatedManipulator, Vec4
from core.protocol import RigAddress
from transports.registry import TRANSPORTS
from transports.sio import serve_sio
from transports.sio.client import SioManipulatorClient


@pytest.mark.parametrize(("raw", "shown", "hidden"), [
    ("cameras:5555: no reply to CMD 604 within 5.0 s (8 send(s))", "The rig did not answer within 5 s", "CMD 604"),
    ("127.0.0.1:9001: no echo of EXPINTERRUPT within 1 s; the rig may not have received it (not resent: "
     "EXPINTERRUPT is not idempotent)", "not sent again", "idempotent"),
    ("no answer to EXPINFO from sync (policy rollback)", "sync did not answer the prepare request", "policy"),
    ("cannot edit the rigs during a session (phase running)", "while a session is under way", "phase running"),
    ('Cannot move manipulator while inside the brain. Set the depth ("set_depth") instead.',
     "only depth moves are allowed", "set_depth"),
    ("probe at x 13.684000000000001", "x 13.684", "000000001"),
])
def test_protocol_detail_goes_to_the_detail_and_the_sentence_is_plain(raw, shown, hidden):
    sentence, detail = plain(raw)
    assert shown in sentence and hidden not in sentence
    assert detail == raw


@pytest.mark.parametrize(("raw", "shown"), [
    ("start: RUNNING (31.0 ms)", "Started (RUNNING)"),
    ("init: EXPINIT", "Initialising…"),
    ("init: TIMEOUT: 127.0.0.1:1: no reply to EXPINIT within 2 s (no echo; 3 attempts)",
     "Initialising failed: the rig did not answer within 2 s"),
    ("link unreachable: no reply to EXPSTATUS within 2 s",
     "Not answering: the rig stopped answering (nothing for 2 s)"),
])
def test_the_step_cell_says_what_the_session_did_with_the_rig(raw, shown):
    assert progress_words(raw) == shown


def test_a_plain_sentence_has_no_detail():
    assert plain("move probe 1 to x 14.000 mm") == ("Move probe 1 to x 14.000 mm", "")


@pytest.mark.parametrize(("text", "where", "says"), [
    ("sync: udp://127.0.0.1:9001\ncams:\n  uri: udp://127.0.0.1:9002\n   role: aux\n", "line 4, column 8",
     "indentation"),
    ("a: udp://127.0.0.1:9001\n\tb: udp://127.0.0.1:9002\n", "line 2, column 1", "indent with spaces"),
])
def test_a_yaml_error_names_file_line_and_column_in_one_sentence(tmp_path, text, where, says):
    path = tmp_path / "remote_rigs.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rigs(path, TRANSPORTS)
    message = str(caught.value)
    assert message.startswith(f"{path}, {where}: ") and says in message
    assert "\n" not in message and "<unicode string>" not in message and "^" not in message


def test_every_text_colour_reads_at_4_5_to_1_and_plot_colours_at_3_to_1():
    for colour in [*LEVEL_COLOURS.values(), *LINK_COLOURS.values(), STALE]:
        for background in TABLE_BACKGROUNDS:
            assert contrast(colour, background) >= 4.5, (colour, background)
    for background, text in (ALARM_OPEN, ALARM_CLOSED):
        assert contrast(text, background) >= 4.5, (text, background)
    assert contrast("#b58900", "#ffffff") < 4.5  # the old warning colour, for the record
    for colour in SERIES:
        assert contrast(colour, PLOT_BACKGROUND) >= 3.0, colour


def test_stop_all_confirms_every_moving_probe_halted_and_reports_a_dead_rig():
    async def main():
        sim = SimulatedManipulator(ids=["1", "2"])
        server = await serve_sio(RigAddress("sio", LOOPBACK, 0), sim, {})
        client = SioManipulatorClient(url(server.port), timeout=2.0)
        dead = SioManipulatorClient(url(9), timeout=0.3)  # nothing listens on port 9
        try:
            await client.connect()
            moves = [asyncio.create_task(client.set_position(i, Vec4(15, 15, 15, 15), 1.0)) for i in ("1", "2")]
            await wait_until(lambda: all(sim.is_moving(i) for i in ("1", "2")), what="both moving")
            report = await halt_and_confirm({"probes": client})
            assert report.ok and report.text().startswith("STOP ALL sent at ")
            assert "2/2 probes halted (positions confirmed) in " in report.result_text()
            assert not any(sim.is_moving(i) for i in ("1", "2"))
            assert {p.probe: p.position for p in report.probes} == {i: await sim.position(i) for i in ("1", "2")}
            await asyncio.gather(*moves, return_exceptions=True)
            both = await halt_and_confirm({"probes": client, "spare": dead})
            assert not both.ok and "2/2 probes halted" in both.result_text()
            assert "spare: stop not confirmed" in both.result_text()
            assert StopAllReport(0.0).result_text() == "waiting for the probes to confirm…"
        finally:
            await client.close()
            await dead.close()
            await server.close()

    run(main(), timeout=30)
