"""Seeded generator of Ali-CCP-shaped raw data, calibrated on the published statistics.

Everything is vectorised: numpy draws a block of ~50k impressions (and the matching share of
common rows) at a time, polars turns it into lines and writes them, so memory is bounded by the
block and throughput is tens of MB/s. See /work/shared/ALICCP.md for the numbers used here.
"""

from __future__ import annotations

import math
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from deepcvr import aliccp
from deepcvr.errors import ConfigError
from deepcvr.fsutil import TMP_MARK, atomic_file

BLOCK = 50_000  # impressions per block (~13 MB of skeleton text + as much common text)
RUN_MEAN = 58  # impressions per common row
RUN_SIGMA = 1.0  # lognormal spread of run lengths: most runs short, a few very long
CTR = 0.03887
CVR_CLICKED = 0.005353  # conversions among clicks (8,802 / 1,644,256)
CVR_UNCLICKED = 5.4e-6  # the (click=0, conversion=1) funnel anomaly (230 / 42.2 M)

# Value kinds: one-hot 1.0, ln(1+c), ln(1+c/12) (the steps seen for 150_14 in the fixture).
ONE, LOG, LOG12 = 0, 1, 2

# field, id block size, popularity skew (larger = more concentrated), value kind, geometric p of
# the count behind a log value. Blocks follow the id order seen in the real fixture; total ~10.1 M.
_SPECS: tuple[tuple[str, int, float, int, float], ...] = (
    ("101", 440_000, 2.0, ONE, 1.0),
    ("109_14", 13_000, 3.0, LOG, 0.15),
    ("110_14", 2_980_000, 3.0, LOG, 0.25),
    ("121", 98, 1.5, ONE, 1.0),
    ("122", 14, 1.5, ONE, 1.0),
    ("124", 2, 1.2, ONE, 1.0),
    ("125", 7, 1.5, ONE, 1.0),
    ("126", 3, 1.5, ONE, 1.0),
    ("127", 3, 1.5, ONE, 1.0),
    ("128", 2, 1.2, ONE, 1.0),
    ("129", 4, 1.5, ONE, 1.0),
    ("127_14", 420_000, 3.0, LOG, 0.2),
    ("150_14", 100_000, 3.0, LOG12, 1 / 40),
    ("205", 4_080_000, 3.0, ONE, 1.0),
    ("206", 9_000, 3.0, ONE, 1.0),
    ("207", 400_000, 3.0, ONE, 1.0),
    ("210", 100_000, 3.0, ONE, 1.0),
    ("216", 250_000, 3.0, ONE, 1.0),
    ("508", 300_000, 3.0, LOG, 0.3),
    ("509", 500_000, 3.0, LOG, 0.3),
    ("702", 300_000, 3.0, LOG, 0.3),
    ("853", 190_000, 3.0, LOG12, 1 / 30),
    ("301", 3, 2.5, ONE, 1.0),
)
_CODE = {spec[0]: i for i, spec in enumerate(_SPECS)}
_SIZE = np.array([s[1] for s in _SPECS], dtype=np.int64)
_BASE = 1 + np.concatenate(([0], np.cumsum(_SIZE)[:-1]))  # first feature id of each field
_SKEW = np.array([s[2] for s in _SPECS])
_KIND = np.array([s[3] for s in _SPECS])
_GEOM_P = np.array([s[4] for s in _SPECS])
_FEISTEL_KEYS = (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)
_FIELD_PREFIX = pl.Series([f"{s[0]}{aliccp.FIELD_SEP}" for s in _SPECS])

_VMAX = 4096  # counts behind log values are clipped here; the strings come from one table
_VALUES = pl.Series(
    [aliccp.VALUE_SEP + "1.0"]
    + [f"{aliccp.VALUE_SEP}{round(math.log1p(c), 5)!r}" for c in range(1, _VMAX + 1)]
    + [f"{aliccp.VALUE_SEP}{round(math.log1p(c / 12), 5)!r}" for c in range(1, _VMAX + 1)]
)
_VALUE_OFFSET = np.where(_KIND == LOG12, _VMAX, 0)

# Field orders inside a line. The real lines are grouped by field but not sorted, and a
# multi-valued field may come in two pieces (two orders below are the real fixture's).
_COMMON_FIELDS = ("101", "121", "122", "124", "125", "126", "127", "128", "129",
                  "109_14", "110_14", "127_14", "150_14")  # fmt: skip
_COMMON_LAYOUTS = (
    ("101", "125", "126", "127", "128", "129", "150_14", "121", "150_14", "127_14", "109_14",
     "110_14", "122", "124"),
    ("127_14", "150_14", "129", "128", "127", "126", "125", "124", "101", "122", "121", "110_14",
     "109_14", "127_14"),
    ("101", "121", "122", "124", "125", "126", "127", "128", "129", "109_14", "110_14", "127_14",
     "150_14"),
)  # fmt: skip
_SKELETON_FIELDS = ("205", "206", "207", "210", "216", "508", "509", "702", "853", "301")
_SKELETON_LAYOUTS = (
    ("205", "206", "207", "210", "216", "508", "509", "702", "853", "301"),
    ("301", "205", "210", "216", "207", "206", "853", "702", "509", "210", "508"),
)
# Calibration: (field, mean count per common row, cap) for the history fields.
_HISTORY = (("109_14", 69, 1_000), ("110_14", 250, 3_000), ("127_14", 154, 2_000),
            ("150_14", 136, 2_000))  # fmt: skip
_PROFILE = ("121", "122", "124", "125", "127", "128")  # present together on ~87 % of rows


@dataclass(frozen=True)
class SynthResult:
    split: str
    samples: int  # impressions written
    common_rows: int
    sample_structures: int  # sum of feature_num over skeleton lines
    common_structures: int
    files: tuple[Path, ...]  # what was written (CSVs, or the archive with archive=True)
    raw_bytes: int = 0  # size of the CSVs (inside the archive with archive=True)


class _Layout:
    """Per-line field orders of one file, as lookup tables over a side's local field numbers."""

    def __init__(self, fields: tuple[str, ...], layouts: tuple[tuple[str, ...], ...]) -> None:
        width = max(len(lay) for lay in layouts)
        self.codes = np.array([_CODE[f] for f in fields], dtype=np.uint8)  # radix-sortable
        self.field = np.full((len(layouts), width), -1)  # -1 pads short layouts (count 0)
        self.first = np.zeros((len(layouts), width), dtype=bool)  # first place of a split field
        self.second = np.zeros((len(layouts), width), dtype=bool)
        for v, lay in enumerate(layouts):
            assert sorted(set(lay)) == sorted(fields), lay
            for p, f in enumerate(lay):
                self.field[v, p] = fields.index(f)
                if lay.count(f) == 2:
                    self.first[v, p] = lay.index(f) == p
                    self.second[v, p] = lay.index(f) != p


_COMMON = _Layout(_COMMON_FIELDS, _COMMON_LAYOUTS)
_SKELETON = _Layout(_SKELETON_FIELDS, _SKELETON_LAYOUTS)


def _permute(x: np.ndarray, n: int) -> np.ndarray:
    """A fixed pseudo-random bijection of [0, n): Feistel network on 2**bits >= n, cycle walking.

    Consecutive popularity ranks must not become runs of evenly spaced ids, as a linear map gives.
    """
    bits = max(2, (n - 1).bit_length())
    out = x.astype(np.uint64)
    todo = np.arange(len(out))
    while todo.size:  # values landing in [n, 2**bits) walk their cycle again (< 2 passes avg)
        v = out[todo]
        for r, key in enumerate(_FEISTEL_KEYS):
            low = bits - bits // 2 if r % 2 == 0 else bits // 2  # unbalanced halves alternate
            high = bits - low
            mix = (v & np.uint64((1 << low) - 1)) + np.uint64(key)
            mix *= np.uint64(0x9E3779B97F4A7C15)  # wraps mod 2**64, high bits well mixed
            mix >>= np.uint64(40)
            v = ((v & np.uint64((1 << low) - 1)) << np.uint64(high)) | (
                ((v >> np.uint64(low)) ^ mix) & np.uint64((1 << high) - 1)
            )
        out[todo] = v
        todo = todo[v >= n]
    return out.astype(np.int64)


def _scatter(rank: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Map each field's popularity rank to an id offset in its block (one field at a time)."""
    out = np.empty_like(rank)
    order = np.argsort(field, kind="stable")
    bounds = np.searchsorted(field[order], np.arange(len(_SIZE) + 1))
    for f in range(len(_SIZE)):
        if bounds[f + 1] > bounds[f]:
            idx = order[bounds[f] : bounds[f + 1]]
            out[idx] = _permute(rank[idx], int(_SIZE[f]))
    return out


def _feature_lists(rng: np.random.Generator, counts: np.ndarray, lay: _Layout) -> pl.Series:
    """One feature_list string per line from its per-field counts (lines x side fields)."""
    n = counts.shape[0]
    variant = rng.integers(len(lay.field), size=n)
    pos_field = lay.field[variant]
    c = np.where(pos_field >= 0, np.take_along_axis(counts, np.maximum(pos_field, 0), 1), 0)
    head = np.floor(c * rng.random((n, 1))).astype(np.int64)  # share of a split field's 1st place
    first, second = lay.first[variant], lay.second[variant]
    per_pos = np.where(first, head, np.where(second, c - head, c)).ravel()
    k_offset = np.where(second, head, 0).ravel()  # item number within the field continues

    # Popularity: a Zipf-like start rank per (line, field); a multi-valued field takes
    # consecutive ranks from there, so its ids are distinct within a line yet popular ones recur.
    codes = lay.codes
    start = np.floor(_SIZE[codes] * rng.random(counts.shape) ** _SKEW[codes]).astype(np.int64)
    start_pos = np.take_along_axis(start, np.maximum(pos_field, 0), 1).ravel()

    total = int(per_pos.sum())
    field = np.repeat(codes[np.maximum(pos_field, 0)].ravel(), per_pos)
    first_item = np.cumsum(per_pos) - per_pos
    k = np.arange(total) - np.repeat(first_item - k_offset, per_pos)
    rank = (np.repeat(start_pos, per_pos) + k) % _SIZE[field]
    ids = _BASE[field] + _scatter(rank, field)
    value = np.minimum(rng.geometric(_GEOM_P[field]), _VMAX) + _VALUE_OFFSET[field]
    value[_KIND[field] == ONE] = 0

    items = pl.select(
        pl.concat_str(
            _FIELD_PREFIX.gather(field), pl.Series(ids).cast(pl.String), _VALUES.gather(value)
        )
    ).to_series()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=1), out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), items.to_arrow())
    return pl.Series(pl.from_arrow(lists)).list.join(aliccp.ITEM_SEP)


def _common_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    col = {f: i for i, f in enumerate(_COMMON_FIELDS)}
    counts = np.zeros((n, len(_COMMON_FIELDS)), dtype=np.int64)
    counts[:, col["101"]] = 1
    profile = rng.random(n) >= 0.13
    for f in _PROFILE:
        counts[:, col[f]] = profile
    counts[:, col["126"]] = profile & (rng.random(n) < 0.42 / 0.87)  # 126 missing on ~58 %
    counts[:, col["129"]] = profile & (rng.random(n) < 0.64 / 0.87)  # 129 missing on ~36 %
    # One activity factor per row for all histories: heavy users are heavy everywhere.
    activity = rng.lognormal(-(0.8**2) / 2, 0.8, n) * (rng.random(n) >= 0.01)  # 1 %: no history
    for f, mean, cap in _HISTORY:
        own = rng.lognormal(-(0.3**2) / 2, 0.3, n)
        counts[:, col[f]] = np.minimum(np.rint(mean * activity * own), cap)
    return counts


def _skeleton_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    col = {f: i for i, f in enumerate(_SKELETON_FIELDS)}
    counts = np.zeros((n, len(_SKELETON_FIELDS)), dtype=np.int64)
    for f in ("205", "206", "207", "216", "301"):
        counts[:, col[f]] = 1
    n210 = np.minimum(rng.geometric(1 / 4, n), 38)  # caps keep a line within 59 structures
    counts[:, col["210"]] = n210
    counts[:, col["853"]] = np.minimum(rng.binomial(n210, 0.35), 13)
    for f in ("508", "509", "702"):
        counts[:, col[f]] = rng.random(n) < 0.85
    return counts


def _run_ends(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Exclusive end position of each run of impressions sharing one common row."""
    mu = math.log(RUN_MEAN - 0.5) - RUN_SIGMA**2 / 2
    lengths = np.empty(0, dtype=np.int64)
    while lengths.sum() < samples:
        more = np.ceil(rng.lognormal(mu, RUN_SIGMA, samples // RUN_MEAN + 16)).astype(np.int64)
        lengths = np.concatenate((lengths, more))
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, samples)) + 1  # the run holding the last impression
    ends = ends[:k]
    ends[-1] = samples
    return ends


def _index_strings(rng: np.random.Generator, k: int) -> pl.Series:
    """k unique random 64-bit indexes as sorted 16-char lower-case hex."""
    values = np.empty(0, dtype=np.uint64)
    while len(values) < k:
        more = rng.integers(0, 2**64 - 1, size=k - len(values), dtype=np.uint64, endpoint=True)
        values = np.unique(np.concatenate((values, more)))
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((k, 16), dtype=np.uint8)
    chars[:, 0::2] = digits[raw >> 4]
    chars[:, 1::2] = digits[raw & 15]
    return pl.Series(chars.view("S16").ravel().astype("U16"))


def _write_csvs(
    out_dir: Path, samples: int, split: str, seed: int, advance: Callable[[int], None] | None
) -> SynthResult:
    # Streams: 0 = layout of the whole split, 1 = common block b, 2 = skeleton block b.
    tag = zlib.crc32(split.encode())  # stable across runs, unlike hash()
    root = np.random.default_rng([seed, tag, 0])
    ends = _run_ends(root, samples)
    k = len(ends)
    index = _index_strings(root, k)  # sorted, so rank j is the j-th common line
    rank_of_run = root.permutation(k)  # the common file is by index, runs are in random order
    forced = root.choice(samples, size=2, replace=False) if samples >= 1000 else np.empty(0)

    blocks = max(1, -(-samples // BLOCK))
    sample_structures = common_structures = 0
    skeleton_path = out_dir / aliccp.skeleton_name(split)
    common_path = out_dir / aliccp.common_name(split)
    with ExitStack() as stack:
        skeleton = stack.enter_context(open(stack.enter_context(atomic_file(skeleton_path)), "wb"))
        common = stack.enter_context(open(stack.enter_context(atomic_file(common_path)), "wb"))
        for b in range(blocks):
            # This block's share of common rows, so both files (and the progress) move together.
            lo, hi = k * b // blocks, k * (b + 1) // blocks
            if hi > lo:
                rng = np.random.default_rng([seed, tag, 1, b])
                counts = _common_counts(rng, hi - lo)
                num = counts.sum(axis=1)
                common_structures += int(num.sum())
                pl.DataFrame(
                    {"i": index[lo:hi], "n": num, "f": _feature_lists(rng, counts, _COMMON)}
                ).write_csv(common, include_header=False, quote_style="never")

            a, z = samples * b // blocks, samples * (b + 1) // blocks
            rng = np.random.default_rng([seed, tag, 2, b])
            n = z - a
            click = rng.random(n) < CTR
            conv = np.where(click, rng.random(n) < CVR_CLICKED, rng.random(n) < CVR_UNCLICKED)
            # Guarantee one (0,1) and one (1,1) row so every stratum exists in test-sized data.
            for pos, label in zip(forced.tolist(), (0, 1), strict=False):
                if a <= pos < z:
                    click[pos - a], conv[pos - a] = bool(label), True
            counts = _skeleton_counts(rng, n)
            num = counts.sum(axis=1)
            sample_structures += int(num.sum())
            run = np.searchsorted(ends, np.arange(a, z), side="right")
            pl.DataFrame(
                {
                    "id": np.arange(a + 1, z + 1, dtype=np.int64),
                    "click": click.astype(np.int8),
                    "conversion": conv.astype(np.int8),
                    "i": index.gather(rank_of_run[run]),
                    "n": num,
                    "f": _feature_lists(rng, counts, _SKELETON),
                }
            ).write_csv(skeleton, include_header=False, quote_style="never")
            if advance is not None:
                advance(n)
    return SynthResult(
        split=split,
        samples=samples,
        common_rows=k,
        sample_structures=sample_structures,
        common_structures=common_structures,
        files=(skeleton_path, common_path),
        raw_bytes=skeleton_path.stat().st_size + common_path.stat().st_size,
    )


def _tar(archive: Path, members: tuple[Path, ...]) -> None:
    """A reproducible tar.gz (fixed mtime/owner, no name in the gzip header) of `members`."""
    from isal import igzip  # declared dependency; ~3x faster than zlib

    with (
        open(archive, "wb") as raw,
        igzip.IGzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in members:
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as fh:
                tar.addfile(info, fh)


def generate(
    out_dir: Path,
    samples: int,
    split: str = "train",
    seed: int = 0,
    archive: bool = False,
    advance: Callable[[int], None] | None = None,
) -> SynthResult:
    """Write an Ali-CCP-shaped split (skeleton + common CSVs, or their tar.gz) into `out_dir`.

    Same arguments give byte-identical files; `advance(n)` reports impressions written.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"synthetic samples must be a positive integer, got {samples!r}")
    if split not in aliccp.SPLITS:
        raise ConfigError(f"unknown split {split!r}: expected one of {', '.join(aliccp.SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not archive:
        return _write_csvs(out_dir, samples, split, seed, advance)
    final = out_dir / aliccp.archive_name(split)
    # The CSVs go to a hidden temp dir beside the archive (same disk; cleaned by the
    # temp-leftover sweep if we are killed), then only the archive is renamed into place.
    with tempfile.TemporaryDirectory(prefix=TMP_MARK, dir=out_dir) as tmp:
        result = _write_csvs(Path(tmp), samples, split, seed, advance)
        with atomic_file(final) as tmp_archive:
            _tar(tmp_archive, result.files)
    return SynthResult(
        split=result.split,
        samples=result.samples,
        common_rows=result.common_rows,
        sample_structures=result.sample_structures,
        common_structures=result.common_structures,
        files=(final,),
        raw_bytes=result.raw_bytes,
    )
