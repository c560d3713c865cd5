"""User-facing errors: one line that says what, where and what to do."""

from __future__ import annotations


class DeepCVRError(Exception):
    """A mistake in the user's input or environment; printed as one line, never a traceback."""

    exit_code = 1


class ConfigError(DeepCVRError):
    """The pipeline YAML or a CLI option is invalid; nothing was run."""

    exit_code = 2


class DataError(DeepCVRError):
    """Input data cannot be processed (corrupt archive, missing member, ...)."""


class TargetError(DeepCVRError):
    """The target database cannot be reached or written."""
