"""The console's ``.part`` writer: direct writes on a local disk with the unaligned tail through the page cache,
a resumed file cut back to an aligned length, and ordinary writes where direct ones are refused."""

import asyncio
import errno
import os
from pathlib import Path

import pytest
import xxhash
from helpers import run

from transports.zmq import part_writer
from transports.zmq.part_writer import DIRECT_ALIGN, DIRECT_FILESYSTEMS, PartWriter, filesystem_type

DATA = os.urandom(3 * 1024 * 1024 + 777)
CHUNK = 1024 * 1024


async def write_all(writer, data, start=0):
    ends = [await writer.submit(data[o:o + CHUNK]) for o in range(start, len(data), CHUNK)]
    await asyncio.get_running_loop().run_in_executor(None, writer.close, True)
    return ends


def test_direct_writes_with_an_unaligned_tail_give_the_exact_file(tmp_path):
    if filesystem_type(tmp_path) not in DIRECT_FILESYSTEMS:
        pytest.skip(f"{tmp_path} is on {filesystem_type(tmp_path)}, not a local disk file system")
    part = tmp_path / "a.bin.part"
    writer = PartWriter(part)
    assert writer.direct
    ends = run(write_all(writer, DATA))
    assert part.read_bytes() == DATA and writer.hash.hexdigest() == xxhash.xxh3_128(DATA).hexdigest()
    assert ends == [min(o + CHUNK, len(DATA)) for o in range(0, len(DATA), CHUNK)]


def test_a_resumed_part_of_unaligned_length_is_cut_back_and_completed(tmp_path):
    if filesystem_type(tmp_path) not in DIRECT_FILESYSTEMS:
        pytest.skip("needs a local disk file system")
    part = tmp_path / "a.bin.part"
    part.write_bytes(DATA[:5000])  # a console killed in the middle of a tail write
    writer = PartWriter(part)
    assert writer.offset == DIRECT_ALIGN and part.stat().st_size == DIRECT_ALIGN
    run(write_all(writer, DATA, start=DIRECT_ALIGN))
    assert part.read_bytes() == DATA and writer.hash.hexdigest() == xxhash.xxh3_128(DATA).hexdigest()


def test_where_direct_writes_are_refused_the_page_cache_takes_them(tmp_path, monkeypatch):
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd, data, offset):
        if fd == writer.dfd:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    part = tmp_path / "a.bin.part"
    monkeypatch.setattr(part_writer, "filesystem_type", lambda path: "ext4")
    writer = PartWriter(part)
    if writer.dfd is None:
        pytest.skip("this file system does not open files for direct writes at all")
    monkeypatch.setattr(part_writer.os, "pwrite", pwrite)
    run(write_all(writer, DATA))
    assert part.read_bytes() == DATA and refused == [0] and not writer.direct


def test_file_system_types_come_from_the_mount_table():
    assert filesystem_type(Path("/proc/self")) == "proc"
    if Path("/dev/shm").is_dir():
        assert filesystem_type(Path("/dev/shm")) in ("tmpfs", "shm")
        assert filesystem_type(Path("/dev/shm")) not in DIRECT_FILESYSTEMS


def test_after_a_failed_write_nothing_more_is_written(tmp_path, monkeypatch):
    real_pwrite = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        calls.append(offset)
        if offset == CHUNK:  # the disk fills up at the second chunk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    part = tmp_path / "a.bin.part"
    monkeypatch.setattr(part_writer, "filesystem_type", lambda path: None)  # (through the page cache)
    writer = PartWriter(part)
    monkeypatch.setattr(part_writer.os, "pwrite", pwrite)

    async def main():
        futures = [writer.submit(DATA[o:o + CHUNK]) for o in range(0, len(DATA), CHUNK)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, writer.close)
        return results

    results = run(main())
    assert results[0] == CHUNK and all(isinstance(r, OSError) for r in results[1:])
    assert calls == [0, CHUNK] and part.stat().st_size == CHUNK  # a prefix of the file, no hole after it
