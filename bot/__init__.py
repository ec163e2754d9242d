"""servicebot core: contracts, turn pipeline, plugin registry, config, CLI and web app."""

from __future__ import annotations

import os

# Idle OpenMP threads must sleep, not spin: on a small CPU a spinning pool left by generation slows the next
# query embedding ~15x (measured with bench/e2e.py). Must be set before torch loads, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
