"""Logging for the CLI: Rich on a terminal, plain timestamped lines otherwise (CI, files)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from rich.console import Console

from deepcvr.secrets import mask_text

LOGGER = "deepcvr"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
PIPE_WIDTH = 160


class MaskFilter(logging.Filter):
    """Mask passwords and registered secrets in every record before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at emit time (test runners swap it per call)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def make_console(stderr: bool = False) -> Console:
    """A Rich console; when piped, wide enough that tables do not wrap in log files."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def setup_logging(verbose: bool = False, quiet: bool = False) -> logging.Logger:
    """Configure the `deepcvr` logger: DEBUG with -v, WARNING with -q, INFO otherwise.

    Safe to call again (each CLI invocation in tests does): the previous handler is replaced.
    """
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_deepcvr", False):
            logger.removeHandler(handler)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True), show_path=verbose, rich_tracebacks=verbose
        )
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    handler._deepcvr = True  # type: ignore[attr-defined]  # marks our own handler
    handler.addFilter(MaskFilter())
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
