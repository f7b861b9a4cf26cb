"""Plain words for the operator: what a session step, a phase or an error means, protocol detail kept apart.

The engine and the transports speak protocol ("no reply to CMD 604 within 5.0 s (8 send(s))", "EXPINTERRUPT
is not idempotent", "(policy rollback)"). That text is right for the journal and for whoever debugs a rig,
and wrong as the first thing an experimenter reads mid-session. :func:`plain` turns a message into
``(sentence, detail)``: one sentence in the experimenter's terms, and the original text as the detail the
window puts behind a "Details" expander or in the log's detail column. Qt-free, tested headless.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

#: what each session step is called on screen
STEPS: dict[str, str] = {
    "info": "preparing", "init": "initialising", "start": "starting", "stop": "stopping",
    "interrupt": "aborting", "abort": "aborting", "cleanup": "cleaning up", "rollback": "undoing the start",
    "status": "checking status", "link": "connection", "alyx": "registering with Alyx",
}
#: what a rig's row says once it carried out a step
DONE: dict[str, str] = {"info": "prepared", "init": "initialised", "start": "started", "stop": "stopped",
                        "interrupt": "aborted", "abort": "aborted", "cleanup": "cleaned up", "rollback": "undone",
                        "status": "checked"}
#: the protocol's event names, as the step they carry out
EVENTS: dict[str, str] = {
    "EXPINFO": "prepare", "EXPINIT": "initialise", "EXPSTART": "start", "EXPEND": "stop",
    "EXPINTERRUPT": "abort", "EXPCLEANUP": "clean up", "EXPSTATUS": "status check", "ALYX": "Alyx",
}
#: session phases as the session panel says them
PHASES: dict[str, str] = {
    "idle": "READY", "info": "PREPARED", "initialised": "INITIALISED", "running": "RUNNING",
    "stopped": "STOPPED", "failed": "FAILED", "aborted": "ABORTED",
}

#: link states as the log says them
LINKS: dict[str, str] = {"online": "connected", "connecting": "connecting…", "unreachable": "not answering",
                         "closed": "disconnected"}


def step_word(step: str) -> str:
    head = step.split(":")[0].strip()
    return STEPS.get(head, head)


def done_word(step: str) -> str:
    head = step.split(":")[0].strip()
    return DONE.get(head, f"{step_word(head)}: done")


def event_word(text: str) -> str:
    """Replace protocol event names (``EXPINTERRUPT``) with the step they carry out (``abort``)."""
    return re.sub(r"\b(EXP[A-Z]+|ALYX)\b", lambda m: EVENTS.get(m.group(1), m.group(1)), text)


def seconds(value: float) -> str:
    """A duration for people: 5 s, 0.5 s, 2 min."""
    if value >= 120:
        return f"{value / 60:.0f} min"
    return f"{value:.1f} s".replace(".0 s", " s") if value < 10 else f"{value:.0f} s"


def mm(value: Any) -> str:
    """A position for people: three decimals (a micrometre), never fifteen digits."""
    return f"{float(value):.3f}" if isinstance(value, int | float) else str(value)


def position(values: Iterable[float], axes: str = "xyzw") -> str:
    return ", ".join(f"{a} {mm(v)}" for a, v in zip(axes, values, strict=False)) + " mm"


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]

#: (pattern, sentence): the first rule that matches a message gives its plain sentence
RULES: list[Rule] = [
    (re.compile(r"^link (online|connecting|unreachable|closed)(?:: (.*))?$", re.I),
     lambda m: _capital(LINKS[m.group(1).lower()]) + (f": {uncapital(plain(m.group(2))[0])}" if m.group(2) else "")),
    (re.compile(r"no reply to EXPSTATUS within ([\d.]+) s", re.I),
     lambda m: f"The rig stopped answering (nothing for {seconds(float(m.group(1)))})"),
    (re.compile(r"no reply to (?:CMD \d+|\w+)(?: \d+)? within ([\d.]+) s", re.I),
     lambda m: f"The rig did not answer within {seconds(float(m.group(1)))}"),
    (re.compile(r"no echo of \w+ within ([\d.]+) s", re.I),
     lambda m: "The rig may not have received the message; it was not sent again so it cannot happen twice"),
    (re.compile(r"no answer to (EXP[A-Z]+) from (.+?)(?: \(|$)", re.I),
     lambda m: f"{m.group(2)} did not answer the {EVENTS.get(m.group(1).upper(), m.group(1))} request"),
    (re.compile(r"rolling back: (\w+) failed on (.+?)(?: \(|$)", re.I),
     lambda m: f"{_capital(step_word(m.group(1)))} failed on {m.group(2)}: stopping the rigs that did start"),
    (re.compile(r"continuing without (.+?) \(degraded\)", re.I),
     lambda m: f"Continuing without {m.group(1)} (the session goes on with the other rigs)"),
    (re.compile(r"inside the brain", re.I),
     lambda m: "This probe is inside the brain: only depth moves are allowed (untick \"Inside brain\" first)"),
    (re.compile(r"^(info|init|start|stop|interrupt|cleanup|abort) \.\.\.$", re.I),
     lambda m: f"{_capital(step_word(m.group(1)))}…"),
    (re.compile(r"not connected", re.I),
     lambda m: "Not connected to the rig (it may be down, or still connecting)"),
    (re.compile(r"connection refused|cannot connect|Connect call failed", re.I),
     lambda m: "Cannot reach the rig (is its program running?)"),
    (re.compile(r"cannot (\w[\w -]*) during a session", re.I),
     lambda m: f"Cannot {m.group(1)} while a session is under way; stop it first"),
    (re.compile(r"cannot (\w+) now: busy with (\w+)", re.I),
     lambda m: f"Cannot {m.group(1)} now: still {step_word(m.group(2))}"),
    (re.compile(r"cannot (\w+) now: phase is (\w+)", re.I),
     lambda m: f"Cannot {m.group(1)} now: the session is {PHASES.get(m.group(2), m.group(2)).lower()}"),
]

#: bits of engine text that are protocol bookkeeping, dropped from the sentence (kept in the detail)
NOISE = re.compile(r"\s*\((?:policy \w+|phase \w+|journal phase \w+)\)")
PEER = re.compile(r"^(?:[a-z]+://)?[\w.-]+:\d+(?:/\S*)?:\s*")
NUMBER = re.compile(r"\d+\.\d{4,}")


def plain(text: str) -> tuple[str, str]:
    """``(sentence, detail)`` for one message; ``detail`` is "" when the sentence says it all."""
    original = text.strip()
    for pattern, sentence in RULES:
        m = pattern.search(original)
        if m:
            return sentence(m), original  # (rules write their own capitals: a rig name keeps its case)
    shown = NOISE.sub("", original)
    shown = PEER.sub("", shown)
    shown = event_word(shown)
    shown = rounded(shown)
    shown = _capital(shown)
    return shown, ("" if shown.rstrip(".").lower() == original.rstrip(".").lower() else original)


def rounded(text: str) -> str:
    """Long decimals (13.684000000000001) rounded to a micrometre, for detail text people may still read."""
    return NUMBER.sub(lambda m: f"{float(m.group(0)):.3f}", text)


def uncapital(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


STEP_LINE = re.compile(r"^(\w+)(?:: [a-z][a-z ]*)?: (.*)$")
STATUS_REPLY = re.compile(r"^([A-Z]+|-|\d+)(?: \([\d.]+ ms\))?$")
FAILED = re.compile(r"^(TIMEOUT|ERROR|SKIPPED): (.*)$")


def progress_words(raw: str) -> str:
    """A session's note for one rig ("start: RUNNING (31.0 ms)", "init: TIMEOUT: no reply ...") as the rigs
    table's Step cell says it ("Started (RUNNING)", "Initialising failed: the rig did not answer ...")."""
    m = STEP_LINE.match(raw.strip())
    if m is None or m.group(1) not in STEPS:
        return plain(raw)[0]
    step, rest = m.groups()
    if re.fullmatch(r"EXP[A-Z]+|ALYX", rest):
        return f"{_capital(step_word(step))}…"
    if STATUS_REPLY.match(rest):
        return f"{_capital(done_word(step))} ({rest.split(' ')[0]})"
    failed = FAILED.match(rest)
    if failed:
        why = outcome_words(failed.group(1).lower(), failed.group(2))
        return f"{_capital(step_word(step))} failed: {uncapital(why)}"
    return plain(raw)[0]


def outcome_words(result: str, error: str | None) -> str:
    """A rig's outcome of one step (``reply``/``error``/``timeout``/``skipped``) in one sentence."""
    if result == "timeout":
        return plain(error or "no answer")[0] if error else "did not answer"
    if result == "skipped":
        return "not asked: " + plain(error or "")[0].lower()
    return plain(error or result)[0]
