"""servicebot core: contracts, turn pipeline, plugin registry, config, CLI and web app."""

from __future__ import annotations

__version__ = "0.1.0"
