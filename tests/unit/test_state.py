"""LiveState mods: the same stream rebuilds the same tree elsewhere (what state streams rely on)."""

from core.state import LiveState, process_mod


def test_mods_replay_to_identical_copy():
    state, mods = LiveState(), []
    state.subscribe(mods.append)
    state.set(["rigs", "a", "status"], 20)
    state.set(["log"], [])
    state.append(["log"], "x")
    state.insert(["log"], 0, "w")
    state.pop(["log"], 0)
    state.update(["rigs", "a"], {"link": "online", "status": 20})
    state.delete(["rigs", "a", "link"])
    copy: dict = {}
    for mod in mods:
        copy = process_mod(copy, mod)
    assert copy == state.raw == {"rigs": {"a": {"status": 20}}, "log": ["x"]}
    assert state.seq == len(mods)


def test_unchanged_value_makes_no_mod_and_kept_mods_do_not_change():
    state, mods = LiveState(), []
    state.subscribe(mods.append)
    state.set(["log"], [])
    state.set(["log"], [])
    state.append(["log"], 1)
    assert len(mods) == 2 and mods[0]["value"] == []


def test_broken_listener_does_not_stop_writer():
    state = LiveState()
    state.subscribe(lambda mod: 1 / 0)
    seen = []
    state.subscribe(seen.append)
    state.set(["x"], 1)
    assert state.get(["x"]) == 1 and len(seen) == 1
