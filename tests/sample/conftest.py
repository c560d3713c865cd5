"""A generated Ali-CCP-shaped population shared by the sampling tests, and helpers to read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepcvr.synth import generate

TRAIN, TEST = 40_000, 10_000


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw files of both splits, flat in one directory (as `deepcvr generate` writes them)."""
    raw = tmp_path_factory.mktemp("population")
    generate(raw, TRAIN, "train", seed=11)
    generate(raw, TEST, "test", seed=12)
    return raw


def lines_by_key(path: Path) -> dict[bytes, bytes]:
    """First column -> whole line (terminator included), read the plain way."""
    return {line.split(b",", 1)[0]: line for line in path.read_bytes().splitlines(keepends=True)}


def sample_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)
