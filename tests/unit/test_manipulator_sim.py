"""SimulatedManipulator behaves like a stage: moves take time, limits hold, stop halts, refusals move nothing."""

import asyncio
import math

import pytest
from helpers import run, wait_until

from core.drivers.manipulator import (
    INSIDE_BRAIN_TEXT,
    Manipulator,
    ManipulatorError,
    PlatformInfo,
    SimulatedManipulator,
    Vec3,
    Vec4,
)


def test_is_a_manipulator_and_reports_platform():
    async def main():
        sim = SimulatedManipulator(ids=("a", "b"))
        assert isinstance(sim, Manipulator)
        info = await sim.platform_info()
        assert info == PlatformInfo("Simulated Manipulator", "sim", 4, Vec4(20, 20, 20, 20))
        assert await sim.list_ids() == ["a", "b"]
        assert await sim.position("a") == Vec4(0, 0, 0, 0)
        assert await sim.angles("a") == Vec3(90, 60, 0)
        assert await sim.shank_count("b") == 1
        await sim.close()

    run(main())


async def moved_from_home(sim, manipulator_id):
    """The stage has left where it started (0, 0, 0, 0): a move is really under way."""
    return (await sim.position(manipulator_id)).x > 0


def test_move_takes_distance_over_speed_and_is_interpolated():
    async def main():
        sim = SimulatedManipulator()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.create_task(sim.set_position("1", Vec4(3, 4, 0, 0), 25.0))  # 5 mm at 25 mm/s = 0.2 s
        await asyncio.sleep(0)
        assert sim.is_moving("1")
        mid = await sim.position("1")
        assert 0 <= mid.x <= 3 and mid.y == pytest.approx(mid.x * 4 / 3)
        final = await task
        assert final == Vec4(3, 4, 0, 0)
        assert loop.time() - t0 >= 0.2 - 1e-3
        assert not sim.is_moving("1")
        assert await sim.position("1") == Vec4(3, 4, 0, 0)
        await sim.close()

    run(main())


def test_stop_halts_mid_move_where_it_is():
    async def main():
        sim = SimulatedManipulator()
        task = asyncio.create_task(sim.set_position("1", Vec4(20, 0, 0, 0), 10.0))  # 2 s
        await wait_until(lambda: moved_from_home(sim, "1"), what="the stage on its way")
        await sim.stop("1")
        halted = await task
        assert 0 < halted.x < 20
        assert not sim.is_moving("1")
        assert await sim.position("1") == halted
        await asyncio.sleep(0.02)  # a short look for what must NOT happen: the stage moving on
        assert await sim.position("1") == halted
        await sim.close()

    run(main())


def test_stop_all_halts_every_manipulator():
    async def main():
        sim = SimulatedManipulator(ids=[str(i) for i in range(8)])
        tasks = [asyncio.create_task(sim.set_position(str(i), Vec4(20, 20, 20, 20), 5.0)) for i in range(8)]
        await wait_until(lambda: all(sim.is_moving(str(i)) for i in range(8)), what="all 8 moving")
        await sim.stop_all()
        assert not any(sim.is_moving(str(i)) for i in range(8))
        results = await asyncio.gather(*tasks)
        assert all(r.x < 20 for r in results)
        await sim.close()

    run(main())


def test_newer_move_supersedes_running_one():
    async def main():
        sim = SimulatedManipulator()
        first = asyncio.create_task(sim.set_position("1", Vec4(20, 0, 0, 0), 10.0))
        await wait_until(lambda: moved_from_home(sim, "1"), what="the first move under way")
        second = asyncio.create_task(sim.set_position("1", Vec4(0, 0, 0, 0.1), 100.0))
        halted = await first
        assert 0 < halted.x < 20
        assert await second == Vec4(0, 0, 0, 0.1)
        await sim.close()

    run(main())


@pytest.mark.parametrize(
    "target",
    [Vec4(21, 0, 0, 0), Vec4(-0.1, 0, 0, 0), Vec4(0, 0, 0, 20.5), Vec4(math.nan, 0, 0, 0), Vec4(0, math.inf, 0, 0)],
)
def test_bad_targets_are_refused_and_nothing_moves(target):
    async def main():
        sim = SimulatedManipulator()
        with pytest.raises(ManipulatorError):
            await sim.set_position("1", target, 1.0)
        assert not sim.is_moving("1")
        assert await sim.position("1") == Vec4()
        await sim.close()

    run(main())


@pytest.mark.parametrize("speed", [0, -1, math.nan, math.inf, -math.inf, "fast", None, True])
def test_bad_speeds_are_refused(speed):
    async def main():
        sim = SimulatedManipulator()
        with pytest.raises(ManipulatorError, match="speed"):
            await sim.set_position("1", Vec4(1, 1, 1, 1), speed)
        with pytest.raises(ManipulatorError, match="speed"):
            await sim.set_depth("1", 1.0, speed)
        assert not sim.is_moving("1")
        await sim.close()

    run(main())


def test_max_speed_is_enforced():
    async def main():
        sim = SimulatedManipulator(max_speed=5.0)
        with pytest.raises(ManipulatorError, match="maximum"):
            await sim.set_position("1", Vec4(1, 0, 0, 0), 6.0)
        await sim.close()

    run(main())


@pytest.mark.parametrize("bad_id", ["-1", "99", "", "0", 1, None])
def test_unknown_ids_are_errors_never_indexing(bad_id):
    async def main():
        sim = SimulatedManipulator()
        for call in (
            sim.position(bad_id),
            sim.angles(bad_id),
            sim.shank_count(bad_id),
            sim.set_position(bad_id, Vec4(1, 1, 1, 1), 1.0),
            sim.set_depth(bad_id, 1.0, 1.0),
            sim.set_inside_brain(bad_id, True),
            sim.stop(bad_id),
        ):
            with pytest.raises(ManipulatorError):
                await call
        with pytest.raises(ManipulatorError):
            sim.is_moving(bad_id)
        assert [await sim.position(i) for i in ("1", "2")] == [Vec4(), Vec4()]
        await sim.close()

    run(main())


def test_inside_brain_blocks_set_position_but_not_set_depth():
    async def main():
        sim = SimulatedManipulator()
        await sim.set_position("1", Vec4(5, 5, 5, 5), 1000.0)
        assert await sim.set_inside_brain("1", True) is True
        assert sim.is_inside_brain("1") and not sim.is_inside_brain("2")
        with pytest.raises(ManipulatorError) as err:
            await sim.set_position("1", Vec4(6, 5, 5, 5), 1.0)
        assert str(err.value) == INSIDE_BRAIN_TEXT
        assert await sim.set_depth("1", 7.5, 1000.0) == 7.5
        assert await sim.position("1") == Vec4(5, 5, 5, 7.5)
        with pytest.raises(ManipulatorError, match="depth"):
            await sim.set_depth("1", 25.0, 1.0)
        with pytest.raises(ManipulatorError, match="depth"):
            await sim.set_depth("1", math.nan, 1.0)
        with pytest.raises(ManipulatorError):
            await sim.set_inside_brain("1", "yes")
        await sim.set_inside_brain("1", False)
        assert await sim.set_position("1", Vec4(6, 5, 5, 5), 1000.0) == Vec4(6, 5, 5, 5)
        await sim.close()

    run(main())


def test_subscribers_get_updates_while_moving_and_at_end():
    async def main():
        sim = SimulatedManipulator(update_hz=200)
        seen: list[tuple[str, Vec4, bool]] = []
        unsubscribe = sim.subscribe(lambda i, p, m: seen.append((i, p, m)))
        await sim.set_position("2", Vec4(0, 2, 0, 0), 20.0)  # 0.1 s
        assert seen[0] == ("2", Vec4(), True)
        assert seen[-1] == ("2", Vec4(0, 2, 0, 0), False)
        moving = [p.y for i, p, m in seen if m]
        assert len(moving) >= 3, seen  # start + several pushes at 200 Hz during 0.1 s
        assert moving == sorted(moving)
        unsubscribe()
        count = len(seen)
        await sim.set_position("2", Vec4(0, 0, 0, 0), 1000.0)
        assert len(seen) == count
        await sim.close()

    run(main())


def test_a_raising_listener_does_not_break_motion():
    async def main():
        sim = SimulatedManipulator()
        sim.subscribe(lambda *a: 1 / 0)
        assert await sim.set_position("1", Vec4(1, 0, 0, 0), 100.0) == Vec4(1, 0, 0, 0)
        await sim.close()

    run(main())


def test_cancelled_caller_does_not_stop_the_move():
    async def main():
        sim = SimulatedManipulator()
        task = asyncio.create_task(sim.set_position("1", Vec4(1, 0, 0, 0), 10.0))
        await wait_until(lambda: sim.is_moving("1"), what="the move under way")
        task.cancel()
        await asyncio.sleep(0)
        assert sim.is_moving("1")
        await sim.stop("1")
        await sim.close()

    run(main())


def test_closed_driver_refuses_commands():
    async def main():
        sim = SimulatedManipulator()
        await sim.close()
        with pytest.raises(ManipulatorError, match="closed"):
            await sim.position("1")
        await sim.close()  # idempotent

    run(main())


def test_vec_parsing_from_mappings():
    assert Vec4.from_mapping({"x": 1, "y": "2.5"}) == Vec4(1, 2.5, 0, 0)
    with pytest.raises(ManipulatorError):
        Vec4.from_mapping({"x": "abc"})
    with pytest.raises(ManipulatorError):
        Vec4.from_mapping({"x": True})
    assert Vec3.from_mapping({"z": 3}) == Vec3(0, 0, 3)
