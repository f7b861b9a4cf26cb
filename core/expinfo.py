"""EXPINFO, the first step: what the console tells each rig, and how the answers settle the main-sync rig.

Pure functions, apart from the engine, so the main-sync rules read in one place: the user's choice (or the
rigs file's ``role: main_sync``) wins and is told ``main_sync: true`` while the others are told which rig
was chosen; without a choice the single rig that claims it wins; none or several claimants is an error
naming them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from core.protocol import PROTOCOL_VERSION, ExpStatus
from core.version import version


def names_text(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def first_dict(reply: Any) -> dict[str, Any]:
    """The first mapping of a reply (EXPINFO's info, EXPINIT's status dict), else an empty one."""
    for item in reply or []:
        if isinstance(item, dict):
            return item
    return {}


def info_payload(subject: str | None, choice: str | None, name: str, proposal: str | None = None) -> tuple[Any, ...]:
    """EXPINFO's data for rig ``name``: ``[CONNECTED, info]``, ``proposal`` an exp_ref the console offers."""
    claim = choice is not None and name == choice
    info = {
        "subject": subject, "main_sync": claim, "master": claim, "exp_ref": proposal,
        "experiment_description": {}, "rig_version": f"rigdeck {version()}", "spec_version": PROTOCOL_VERSION,
    }
    if choice is not None and not claim:
        # RigDeck rig services read this to step down (a bare ``false`` is what iblrig sends about *itself*,
        # so it cannot mean "not you"); the chosen rig gets ``true`` alone, so a rig whose own name differs
        # from its rigs-file name is still promoted.
        info["main_sync_rig"] = choice
    return (int(ExpStatus.CONNECTED), info)


def claimants(infos: dict[str, dict[str, Any]]) -> list[str]:
    """The rigs whose EXPINFO reply says they are the main sync (iblrig's older word: master)."""
    return [n for n, info in infos.items() if info.get("main_sync") is True or info.get("master") is True]


def pick_main_sync(choice: str | None, failed: Sequence[str], claiming: Sequence[str],
                   asked: Sequence[str]) -> tuple[str | None, list[str], str | None]:
    """(main-sync rig or None, warnings, error): the choice if it answered, else the one claimant."""
    if choice is not None:
        if choice in failed:
            return None, [], f"the chosen main-sync rig {choice!r} did not answer EXPINFO"
        others = [n for n in claiming if n != choice]
        warnings = [f"{names_text(others)} also claim main sync; {choice!r} was chosen"] if others else []
        return choice, warnings, None
    if len(claiming) == 1:
        return claiming[0], [], None
    if not claiming:
        return None, [], (f"no rig claims main sync (asked: {names_text(asked)}); "
                          "choose one (--main-sync NAME or role: main_sync)")
    return None, [], f"several rigs claim main sync: {names_text(claiming)}; choose one (--main-sync NAME)"
