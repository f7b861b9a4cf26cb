"""Shared bits of the pc_rpc / sync_struct tests: a demo target and a bounded asyncio.run."""

import asyncio


class Boom(Exception):
    pass


class Target:
    """Demo target."""

    def __init__(self):
        self.calls = []
        self.secret = "do not call"

    def echo(self, x):
        """Return x."""
        return x

    def add(self, a, b=2, *rest, scale=1, **extra):
        return (a + b + sum(rest)) * scale

    def boom(self):
        raise ValueError("bad value")

    def custom(self):
        raise Boom("mine")

    async def slow(self, seconds, tag=None):
        self.calls.append(("start", tag))
        await asyncio.sleep(seconds)
        self.calls.append(("end", tag))
        return tag

    def unencodable(self):
        return object()

    def _private(self):
        return "private"

    @property
    def prop(self):
        raise AssertionError("properties must never be evaluated")


async def open_raw(port):
    return await asyncio.open_connection("127.0.0.1", port)


async def read_line(reader, timeout=5.0):
    return await asyncio.wait_for(reader.readline(), timeout)
