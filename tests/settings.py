"""The settings of a test run: the panel's own (vmpanel.settings), with the demo's secret
key allowed, as `make demo` allows it. Set before the settings are read, and left in the
environment for every process a test starts (worker, watcher, scripts)."""

import os

os.environ.setdefault("VMPANEL_ALLOW_DEMO_SECRET", "true")

from vmpanel.settings import *  # noqa: E402, F403
