"""Suite-wide settings: headless Qt, and the project root on sys.path."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
