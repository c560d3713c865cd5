"""Stratified sampling of Ali-CCP: size, allocate, select, write atomically, report.

Per split: pass 1 counts the strata (and p) with key histograms; the calculator and the
allocation give n_h; pass 2 writes the n_h smallest-key impressions of each stratum and then
the common rows they reference. Everything lands in a temp directory renamed to OUT_DIR.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deepcvr.aliccp import common_name, skeleton_name, splits_present
from deepcvr.errors import ConfigError, DataError
from deepcvr.fsutil import atomic_dir
from deepcvr.sample import raw
from deepcvr.sample.keys import Population, SelectionPlan, key_base, plan_selection
from deepcvr.sample.lines import check_by
from deepcvr.sample.report import REPORT_JSON, print_report, split_report, write_report
from deepcvr.sample.size import SizeResult, compute_size
from deepcvr.sample.strata import Allocation, AllocationResult, allocate, parse_fractions

log = logging.getLogger("deepcvr")


@dataclass
class SampleOptions:
    seed: int = 0
    by: list[str] = field(default_factory=list)
    allocation: Allocation = "proportional"
    stratum_fraction: dict[str, float] = field(default_factory=dict)
    min_per_stratum: int = 1
    neyman_target: Literal["conversion", "click"] = "conversion"
    confidence: float = 0.95
    margin: float | None = None
    relative_margin: float | None = None
    proportion: float | None = None
    fraction: float | None = None
    size: int | None = None
    dry_run: bool = False
    workers: int = 1  # do not change the output, so they are not part of the report
    chunk_bytes: int = 16 << 20

    def settings(self) -> dict[str, Any]:
        """What determines the sample (and goes into the report and the fingerprint)."""
        out = asdict(self)
        for key in ("dry_run", "workers", "chunk_bytes"):
            out.pop(key)
        return out

    def check(self) -> None:
        self.by = check_by(self.by)
        if self.allocation == "explicit":
            parse_fractions(self.stratum_fraction)  # fail before reading any data
        elif self.stratum_fraction:
            raise ConfigError("--stratum-fraction applies to --allocation explicit only")
        if self.fraction is not None and self.size is not None:
            raise ConfigError("give --fraction or --size, not both")
        compute_size(  # checks margin, confidence and fraction before any data is read
            1,
            0,
            confidence=self.confidence,
            margin=self.margin,
            relative_margin=self.relative_margin,
            proportion=0.5,
            fraction=self.fraction,
        )


@dataclass
class SplitDesign:
    split: str
    pop: Population
    invalid_lines: int
    size: SizeResult
    alloc: AllocationResult
    plan: SelectionPlan


def design(split: str, pop: Population, invalid: int, opts: SampleOptions) -> SplitDesign:
    """Calculator + allocation + per-stratum key thresholds for one split."""
    sizes = pop.sizes
    if not sizes.sum():
        raise DataError(f"{split}: no valid impression to sample from")
    conversions = int(pop.strata.filter(conversion=1).get_column("N").sum())
    size = compute_size(
        int(sizes.sum()),
        conversions,
        confidence=opts.confidence,
        margin=opts.margin,
        relative_margin=opts.relative_margin,
        proportion=opts.proportion,
        fraction=opts.fraction,
        size=opts.size,
    )
    alloc = allocate(
        pop,
        size.n,
        opts.allocation,
        fractions=opts.stratum_fraction,
        min_per_stratum=opts.min_per_stratum,
        neyman_target=opts.neyman_target,
    )
    return SplitDesign(split, pop, invalid, size, alloc, plan_selection(pop, alloc.target))


def check_output(out_dir: Path, inputs: list[Path]) -> None:
    """OUT_DIR replaces a whole directory: it must not hold or be any input."""
    out = out_dir.resolve()
    for path in inputs:
        p = path.resolve()
        if p == out or out in p.parents:
            raise ConfigError(f"output {out_dir} would replace the input {path}; choose another")


def fingerprint(inputs: list[Path], opts: SampleOptions, splits: list[str]) -> dict[str, Any]:
    files = {str(p.resolve()): [p.stat().st_size, p.stat().st_mtime_ns] for p in inputs}
    return {"settings": opts.settings(), "splits": splits, "files": files}


def up_to_date(out_dir: Path, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The previous report when OUT_DIR was made from the same inputs and settings."""
    try:
        old = json.loads((out_dir / REPORT_JSON).read_text())
    except (OSError, ValueError):
        return None
    return old if old.get("fingerprint") == json.loads(json.dumps(fp)) else None


def sample_raw(
    raw_dir: Path,
    out_dir: Path,
    opts: SampleOptions,
    splits: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Sample every requested split of a raw directory into OUT_DIR (raw layout)."""
    opts.check()
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw directory not found")
    present = splits_present(raw_dir)
    wanted = list(dict.fromkeys(splits)) if splits else present
    missing = [s for s in wanted if s not in present]
    if missing or not wanted:
        raise DataError(
            f"{raw_dir}: no raw files for {', '.join(missing) or 'any split'} (expected "
            f"{skeleton_name('train')} and {common_name('train')}, or the test ones)"
        )
    files = {s: raw.split_files(raw_dir, s) for s in wanted}
    inputs = [p for pair in files.values() for p in pair]
    check_output(out_dir, [raw_dir, *inputs])
    fp = fingerprint(inputs, opts, wanted)
    if not opts.dry_run and not force and (old := up_to_date(out_dir, fp)) is not None:
        log.info("%s: sample is up to date (same inputs and settings); skipped", out_dir)
        return {**old, "skipped": "up to date"}
    start = time.monotonic()
    designs = {}
    for split in wanted:
        base = key_base(opts.seed, split)
        pop, invalid = raw.scan_skeleton(
            files[split][1], opts.by, base, opts.workers, opts.chunk_bytes
        )
        designs[split] = design(split, pop, invalid, opts)
    report = report_head(str(raw_dir), out_dir, opts, fp)
    if opts.dry_run:
        report["splits"] = {s: split_entry(d, None, {}) for s, d in designs.items()}
        print_report(report)
        return report
    with atomic_dir(out_dir) as tmp:
        for split, d in designs.items():
            common, skeleton = files[split]
            (tmp / split).mkdir()
            counts, lines, indexes = raw.write_skeleton(
                skeleton,
                opts.by,
                key_base(opts.seed, split),
                d.plan,
                tmp / split / skeleton_name(split),
                opts.workers,
                opts.chunk_bytes,
            )
            common_lines, missing = raw.write_common(
                common, indexes, tmp / split / common_name(split), opts.workers, opts.chunk_bytes
            )
            extra = {
                "skeleton_lines": lines,
                "common_lines": common_lines,
                "missing_common_rows": missing,
            }
            if missing:
                log.warning("%s: %d referenced common rows are not in %s", split, missing, common)
            report["splits"][split] = split_entry(d, counts, extra)
        write_report(report, tmp)
    log.info("sample written to %s in %.1f s", out_dir, time.monotonic() - start)
    print_report(report)
    return report


def report_head(
    source: str, out_dir: Path, opts: SampleOptions, fp: dict[str, Any]
) -> dict[str, Any]:
    return {
        "source": source,
        "output": str(out_dir),
        "dry_run": opts.dry_run,
        "seed": opts.seed,
        "settings": opts.settings(),
        "splits": {},
        "fingerprint": fp,
    }


def split_entry(d: SplitDesign, counts: np.ndarray | None, extra: dict[str, Any]) -> dict[str, Any]:
    if counts is not None and not np.array_equal(counts, d.alloc.target):
        log.warning("%s: written strata differ from the plan (duplicate sample ids?)", d.split)
    return split_report(d.split, d.pop, d.size, d.alloc, counts, d.invalid_lines, extra)
