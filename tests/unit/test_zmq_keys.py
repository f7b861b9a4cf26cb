"""zmq:// security: ``rigdeck keys`` (real subprocesses), CURVE accept and refuse, allow-list without restart,
and that no secret key ever reaches a log line or the terminal. (Binding beyond loopback follows the rule of
every scheme: tests/unit/test_transport_options.py.)"""

import logging
import subprocess
import sys

import pytest
from helpers import run
from zmq_helpers import make_link, start_rig

from core.link import LinkState, RequestTimeout
from core.protocol import ExpMessage
from transports.zmq import keys as zmq_keys

CLI = [sys.executable, "-m", "app.cli", "keys"]


def rigdeck_keys(keys_dir, *args):
    proc = subprocess.run([*CLI, "--dir", str(keys_dir), *map(str, args)], capture_output=True, text=True,
                          timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


def secret_of(path):
    return zmq_keys.load_secret(path)[1].decode("ascii")


@pytest.fixture
def keyring(tmp_path):
    """A rig keys folder (rig pair, console allowed) and a console keys folder, made with the real CLI."""
    rig_dir, console_dir = tmp_path / "rig", tmp_path / "console"
    for folder, name in ((rig_dir, "rig"), (console_dir, "console"), (console_dir, "stranger")):
        code, out, err = rigdeck_keys(folder, "new", name)
        assert code == 0, err
        assert secret_of(folder / f"{name}.key_secret") not in out + err
    code, out, err = rigdeck_keys(rig_dir, "allow", console_dir / "console.key")
    assert code == 0, err
    return rig_dir, console_dir


def test_keys_cli_new_allow_list_and_errors(tmp_path):
    folder = tmp_path / "k"
    code, out, err = rigdeck_keys(folder, "new", "console")
    assert code == 0 and err == ""
    public = zmq_keys.load_public(folder / "console.key").decode("ascii")
    secret = secret_of(folder / "console.key_secret")
    assert public in out and secret not in out  # the public key is shown for comparison; the secret never
    assert (folder / "console.key_secret").stat().st_mode & 0o077 == 0
    # never silently replaced
    code, out, err = rigdeck_keys(folder, "new", "console")
    assert code == 2 and "exists already" in err and secret not in err
    assert secret_of(folder / "console.key_secret") == secret
    # a secret key file is refused by allow (it must never be copied to a rig)
    code, out, err = rigdeck_keys(folder, "allow", folder / "console.key_secret")
    assert code == 2 and "SECRET" in err and secret not in out + err
    assert not (folder / "allowed").exists() or not list((folder / "allowed").iterdir())
    code, out, err = rigdeck_keys(folder, "allow", folder / "console.key")
    assert code == 0 and (folder / "allowed" / "console.key").is_file() and public in out
    code, out, err = rigdeck_keys(folder, "allow", folder / "console.key")  # idempotent
    assert code == 0
    # a different key under a name already allowed is refused, not swapped in
    other = tmp_path / "other"
    rigdeck_keys(other, "new", "console")
    code, out, err = rigdeck_keys(folder, "allow", other / "console.key")
    assert code == 2 and "different key" in err
    code, out, err = rigdeck_keys(folder, "allow", tmp_path / "missing.key")
    assert code == 2 and "missing.key" in err and "Traceback" not in err
    (tmp_path / "junk.key").write_text("not a key\n")
    code, out, err = rigdeck_keys(folder, "allow", tmp_path / "junk.key")
    assert code == 2 and "junk.key" in err and "Traceback" not in err
    code, out, err = rigdeck_keys(folder, "new", "../escape")
    assert code == 2 and not (tmp_path / "escape.key").exists()
    code, out, err = rigdeck_keys(folder, "list")
    assert code == 0 and out.count(public) == 2 and secret not in out


def test_curve_accepts_an_allowed_console_and_refuses_others_with_a_log_line(keyring, caplog):
    caplog.set_level(logging.DEBUG)
    rig_dir, console_dir = keyring

    async def main():
        rig, server = await start_rig(options={"keys": str(rig_dir)})
        assert server.curve and len(server.allow_list) == 1
        good = make_link(server.port, server_key=rig_dir / "rig.key",
                         client_key=console_dir / "console.key_secret")
        await good.connect()
        assert await good.request(ExpMessage.EXPSTATUS, "ok") == ["ok"]
        # a console whose key is not allowed: refused at the handshake, never reaches the rig service
        bad = make_link(server.port, name="bad", server_key=rig_dir / "rig.key",
                        client_key=console_dir / "stranger.key_secret")
        await bad.connect()
        with pytest.raises(RequestTimeout) as refused:
            await bad.request(ExpMessage.EXPSTATUS, "sneaky", timeout=1.5)
        assert bad.state is LinkState.UNREACHABLE and "refused our CURVE key" in str(refused.value)
        # a console without CURVE at all gets nowhere either
        plain = make_link(server.port, name="plain")
        await plain.connect()
        with pytest.raises(RequestTimeout):
            await plain.request(ExpMessage.EXPSTATUS, "plain", timeout=1.0)
        refusals = server.allow_list.refusals
        # allow the stranger's key on the running rig: its next (automatic) reconnection is accepted
        zmq_keys.allow_key(console_dir / "stranger.key", rig_dir)
        assert await bad.request(ExpMessage.EXPSTATUS, "welcome", timeout=10) == ["welcome"]
        for link in (good, bad, plain):
            await link.close()
        await server.close()
        return rig, refusals

    rig, refusals = run(main())
    assert refusals >= 1
    tokens = {token for (_, token) in rig.runs}
    assert "sneaky" not in tokens and "plain" not in tokens and {"ok", "welcome"} <= tokens
    stranger = zmq_keys.load_public(console_dir / "stranger.key")
    lines = [r.getMessage() for r in caplog.records]
    assert any("refused a console" in line and zmq_keys.fingerprint(stranger) in line for line in lines)
    secrets = [secret_of(rig_dir / "rig.key_secret"), secret_of(console_dir / "console.key_secret"),
               secret_of(console_dir / "stranger.key_secret")]
    for text in lines:
        assert stranger.decode() not in text and not any(s in text for s in secrets), text


def test_wrong_server_key_is_reported_not_hung(keyring):
    rig_dir, console_dir = keyring

    async def main():
        rig, server = await start_rig(options={"keys": str(rig_dir)})
        link = make_link(server.port, server_key=console_dir / "stranger.key",  # not the rig's key
                         client_key=console_dir / "console.key_secret")
        await link.connect()
        with pytest.raises(RequestTimeout):
            await link.request(ExpMessage.EXPSTATUS, "x", timeout=1.0)
        await link.close()
        await server.close()
        return rig

    assert not run(main()).runs


def test_console_key_files_that_cannot_be_used_are_clear_errors(keyring, tmp_path):
    rig_dir, console_dir = keyring

    async def main():
        link = make_link(1, server_key=rig_dir / "rig.key", client_key=console_dir / "console.key")  # public only
        with pytest.raises(Exception) as err:
            await link.connect()
        await link.close()
        return str(err.value)

    text = run(main())
    assert "holds no secret key" in text and "console.key" in text


def test_allow_list_reload_is_cheap_and_skips_bad_files(keyring):
    rig_dir, console_dir = keyring
    allow = zmq_keys.AllowList(rig_dir)
    assert len(allow) == 1
    (rig_dir / "allowed" / "broken.key").write_text("garbage\n")
    assert not allow.allowed(b"x" * 40) and len(allow) == 1
    console = zmq_keys.load_public(console_dir / "console.key")
    assert allow.callback("*", console) and allow.refusals == 0
