"""``rigdeck serve`` with an ``rpc://`` URI, end to end: a real rig process, driven by ``rigdeck rpc`` and by
the console (``app.console.Console``, what the window uses) through an ``rpc://`` rig of a rigs file — its
methods listed and called, a whole session run, its published state in the console's live state — and
watched by ``rigdeck watch --json``: what an ARTIQ tool sees of a RigDeck rig."""

import asyncio
import json
import signal
import sys

from helpers import run, wait_until

from app.console import Console

CLI = [sys.executable, "-m", "app.cli"]

RIG_YAML = """\
name: laser
uris: [rpc://127.0.0.1:0/laser]
main_sync: true
data_dir: {data}
drivers:
  recorders:
    cam: {{kind: camera, rate: 50}}
  manipulator: {{type: simulated, ids: ["1"]}}
"""


async def rigdeck(*args, timeout=30):
    proc = await asyncio.create_subprocess_exec(*CLI, *map(str, args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def start_rig(tmp_path):
    """Start ``rigdeck serve`` and read its announcement lines up to SERVING."""
    rig_file = tmp_path / "laser.yaml"
    rig_file.write_text(RIG_YAML.format(data=tmp_path / "rigdata"))
    proc = await asyncio.create_subprocess_exec(*CLI, "serve", str(rig_file), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    lines = []
    while not lines or not lines[-1].startswith("SERVING"):
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line, f"rigdeck serve ended early: {(await proc.stderr.read()).decode()[-2000:]}"
        lines.append(line)
    return proc, lines


def test_rigdeck_serve_rpc_is_driven_by_rigdeck_rpc_a_console_session_and_watch(tmp_path):
    async def main():
        proc, lines = await start_rig(tmp_path)
        try:
            ready, notifier, serving = lines
            assert ready.startswith("READY laser rpc://127.0.0.1:") and ready.endswith("/laser")
            port = int(ready.rsplit(":", 1)[1].split("/")[0])
            kind, rig, name, where = notifier.split()
            assert (kind, rig, name) == ("NOTIFIER", "laser", "state")
            nport = int(where.rsplit(":", 1)[1])
            assert nport == port + 1  # the default, found by an RpcLink with `notifier: state`
            assert serving == "SERVING laser 1"

            # sipyco_rpctool-style access: the rig, its manipulator and its recorders are targets
            rc, out, err = await rigdeck("rpc", "127.0.0.1", port, "list-targets")
            assert rc == 0, err
            assert out.splitlines()[0] == "Target(s):   laser, manipulator, recorders"
            assert (await rigdeck("rpc", "127.0.0.1", port, "call", "-t", "laser", "status"))[1].strip() == "0"
            rc, out, err = await rigdeck("rpc", "127.0.0.1", port, "call", "-t", "manipulator", "list_ids")
            assert (rc, out.strip()) == (0, '["1"]'), err
            rc, out, _ = await rigdeck("rpc", "127.0.0.1", port, "call", "-t", "recorders", "list_recorders")
            assert (rc, out.strip()) == (0, '["cam"]')
            rc, _, err = await rigdeck("rpc", "127.0.0.1", port, "call", "-t", "laser", "_service")
            assert rc == 1 and "_service" in err  # private names are never reachable

            # the console (what the window drives): an rpc:// rig of a rigs file takes a whole session, its
            # methods are listed and callable, and its published state is mirrored into the live state
            rigs_file = tmp_path / "remote_rigs.yaml"
            rigs_file.write_text(f"laser: {{uri: 'rpc://127.0.0.1:{port}/laser', role: main_sync, "
                                 f"notifier: state, timeout: 5}}\n")
            console = Console(tmp_path / "console", poll_interval=0.5)
            try:
                await console.load(rigs_file)
                link = console.links["laser"]
                service = ["rigs", "laser", "service"]
                await wait_until(lambda: console.state.get(service) is not None)
                assert console.state.get([*service, "name"]) == "laser" and link.pushes_status
                methods = await link.methods()
                assert {"handle", "status", "info", "state"} <= set(methods) and "_service" not in methods
                assert await link.call("status") == 0
                result = await console.start("KS001")
                assert result.ok, result.error
                session = console.session
                assert session.main_sync == "laser" and session.exp_ref.endswith("_KS001")
                await wait_until(lambda: console.state.get([*service, "status"]) == 20)
                assert console.state.get(["rigs", "laser", "status"]) == 20
                await wait_until(lambda: (console.state.get([*service, "recorders", "cam", "frames"]) or 0) > 0)

                # ARTIQ-dashboard-style watcher, as a script would use it
                rc, out, err = await rigdeck("watch", "127.0.0.1", nport, "state", "--json", "--once")
                assert rc == 0, err
                published = json.loads(out)
                assert published["status"] == 20 and published["exp_ref"] == session.exp_ref
                rc, out, _ = await rigdeck("rpc", "127.0.0.1", port, "call", "-t", "recorders", "running", "cam")
                assert (rc, out.strip()) == (0, "true")

                assert (await console.stop()).ok
                await wait_until(lambda: console.state.get([*service, "status"]) == 30)
                assert console.state.get([*service, "exp_ref"]) == session.exp_ref
            finally:
                await console.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0 and b"STOPPED laser" in out

    run(main(), timeout=120)
