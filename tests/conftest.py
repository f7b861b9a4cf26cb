"""Suite-wide settings: headless Qt, and this folder on sys.path.

Shared test code lives here, imported by plain module name from every test folder: ``helpers`` (the one
``run`` and ``wait_until``), ``udp_helpers``, ``udp_faults`` and ``sio_helpers`` (scripted and faulty
peers for the iblutil and Socket.IO tests, used by unit, integration and interop tests alike).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
