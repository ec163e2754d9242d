"""User-facing errors: one clear sentence, shown without a traceback."""

from __future__ import annotations


class ServicebotError(Exception):
    """An error a user can cause and fix (bad config, unknown plugin, unreadable file)."""


class ConfigError(ServicebotError):
    """The configuration is invalid."""


class PluginError(ServicebotError):
    """A plugin could not be found, configured or loaded."""


class InputError(ServicebotError):
    """A request was rejected before it reached the pipeline."""
