"""Run a real ephys-link 2.x server headless, on loopback and a given port, with its fake platform.

Run by the interop tests with an interpreter that has ephys-link installed (it needs Python >= 3.12 and
pins sensapex, so it is not a RigDeck dependency): ``python ephys_link_launcher.py PORT``.

Two things keep the unmodified ephys-link from running in a test: ``keyboard.add_hotkey`` (its emergency-stop
hotkey) needs a keyboard device and raises on a headless machine, and the server binds every interface on
port 3000, hard-coded. The launcher no-ops the hotkey and hands aiohttp's ``run_app`` the loopback host and
the test's port; everything else (events, replies, the one-client rule) is ephys-link's own code.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    port = int(sys.argv[1])
    import keyboard

    keyboard.add_hotkey = lambda *args, **kwargs: None

    import ephys_link.back_end.server as server_module

    real_run_app = server_module.run_app

    def run_app_on_loopback(app: Any, **kwargs: Any) -> None:
        kwargs.update(host="127.0.0.1", port=port, print=lambda *_: print(f"READY {port}", flush=True))
        real_run_app(app, **kwargs)

    server_module.run_app = run_app_on_loopback
    sys.argv = ["ephys-link", "--background", "--ignore-updates", "--type", "fake"]
    from ephys_link.__main__ import main as ephys_link_main

    ephys_link_main()


if __name__ == "__main__":
    main()
