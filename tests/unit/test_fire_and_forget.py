"""Fire-and-forget: one background call at a time, extra calls dropped and counted, errors as warnings."""

import asyncio
import threading
import time

import pytest
from rpc_helpers import run

from core.fire_and_forget import FFProxy, FireAndForget, FireAndForgetWarning


def test_runs_in_background_and_drops_while_busy(caplog):
    async def main():
        ff = FireAndForget("display")
        done = []

        async def slow(tag):
            await asyncio.sleep(0.2)
            done.append(tag)

        t0 = time.monotonic()
        assert ff.submit(slow, 1) is True
        with pytest.warns(FireAndForgetWarning, match="dropped"):
            assert ff.submit(slow, 2) is False
        assert time.monotonic() - t0 < 0.1  # submit never waits
        assert ff.busy and ff.dropped == 1
        await ff.join()
        assert done == [1] and not ff.busy and ff.completed == 1
        assert ff.submit(slow, 3) is True  # free again
        await ff.join()
        assert done == [1, 3]

    run(main())
    assert "dropped" in caplog.text


def test_exceptions_become_warnings():
    async def main():
        ff = FireAndForget()

        async def fails():
            raise ValueError("controller unplugged")

        ff.submit(fails)
        with pytest.warns(FireAndForgetWarning, match="controller unplugged"):
            await ff.join()
        assert ff.failed == 1
        ff.submit(lambda: 1 / 0)  # plain callables too (in a thread)
        with pytest.warns(FireAndForgetWarning, match="ZeroDivisionError"):
            await ff.join()
        assert ff.failed == 2

    run(main())


def test_plain_callables_run_off_the_loop():
    async def main():
        ff = FireAndForget()
        threads = []
        ff.submit(lambda: (time.sleep(0.2), threads.append(threading.current_thread())))
        ticks = 0
        while ff.busy:  # the loop keeps running while the blocking call sleeps
            ticks += 1
            await asyncio.sleep(0.01)
        assert ticks >= 5 and threads[0] is not threading.main_thread()

    run(main())


def test_proxy_and_cancel():
    class Display:
        def __init__(self):
            self.shown = []

        async def show(self, text):
            await asyncio.sleep(0.05)
            self.shown.append(text)

        async def hang(self):
            await asyncio.sleep(60)

    async def main():
        display = Display()
        proxy = FFProxy(display)
        assert proxy.show("a") is True
        with pytest.warns(FireAndForgetWarning):
            assert proxy.show("b") is False
        await proxy.ff_join()
        assert display.shown == ["a"] and proxy.ff.dropped == 1
        with pytest.raises(AttributeError):
            proxy._private  # noqa: B018
        proxy.hang()
        await proxy.ff.cancel()
        assert not proxy.ff.busy

    run(main())
