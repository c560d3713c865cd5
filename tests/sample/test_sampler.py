"""Stratified sampling of generated raw files: shares, integrity, selection, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepcvr.errors import ConfigError
from deepcvr.sample import keys
from deepcvr.sample.keys import key_base, mix_int
from deepcvr.sample.sampler import SampleOptions, sample_raw
from tests.sample.conftest import lines_by_key, sample_lines

SPLITS = ("train", "test")


def run(raw: Path, out: Path, **kw: Any) -> dict[str, Any]:
    splits = kw.pop("splits", None)
    return sample_raw(raw, out, SampleOptions(**kw), splits)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.csv"))}


def _labels(line: bytes) -> tuple[int, int]:
    cols = line.split(b",", 3)
    return int(cols[1]), int(cols[2])


def test_stratum_shares_match_the_population(population, tmp_path):
    report = run(population, tmp_path / "s", fraction=0.1, min_per_stratum=0)
    for split in SPLITS:
        rep = report["splits"][split]
        assert rep["sample"] == -(-rep["population"] // 10)  # ceil(0.1 N)
        for row in rep["strata"]:
            # Largest-remainder rounding: each n_h within 1 of n·N_h/N.
            assert abs(row["n"] - rep["sample"] * row["population_share"]) < 1
            assert abs(row["sample_share"] - row["population_share"]) < 1 / rep["sample"]
        # The written files hold exactly the reported counts.
        lines = sample_lines(tmp_path / "s" / split / f"sample_skeleton_{split}.csv")
        got = {lab: 0 for lab in [(0, 0), (1, 0), (1, 1), (0, 1)]}
        for line in lines:
            got[_labels(line)] += 1
        assert got == {(r["click"], r["conversion"]): r["n"] for r in rep["strata"]}
        assert rep["estimates"]["ctr"]["population_inside_ci"] is True


def test_funnel_anomaly_kept_when_the_minimum_asks(population, tmp_path):
    plain = run(population, tmp_path / "a", fraction=0.01, min_per_stratum=0)
    lifted = run(population, tmp_path / "b", fraction=0.01, min_per_stratum=3)
    for split in SPLITS:
        anomaly = {
            name: next(
                r
                for r in rep["splits"][split]["strata"]
                if r["click"] == 0 and r["conversion"] == 1
            )
            for name, rep in (("plain", plain), ("lifted", lifted))
        }
        assert anomaly["plain"]["N"] >= 1 and anomaly["plain"]["n"] == 0
        assert anomaly["lifted"]["n"] == min(3, anomaly["lifted"]["N"]) >= 1
        assert anomaly["lifted"]["weight"] == anomaly["lifted"]["N"] / anomaly["lifted"]["n"]
        lines = sample_lines(tmp_path / "b" / split / f"sample_skeleton_{split}.csv")
        assert sum(_labels(line) == (0, 1) for line in lines) == anomaly["lifted"]["n"]
        # Every stratum sampled: the N_h/n_h weighted estimates are the population values.
        for est in lifted["splits"][split]["estimates"].values():
            assert est["weighted"] == pytest.approx(est["population"], rel=1e-12)


def test_integrity_and_verbatim_lines(population, tmp_path):
    out = tmp_path / "s"
    report = run(population, out, fraction=0.05, by=["301"])
    for split in SPLITS:
        source = lines_by_key(population / f"sample_skeleton_{split}.csv")
        common = lines_by_key(population / f"common_features_{split}.csv")
        got = sample_lines(out / split / f"sample_skeleton_{split}.csv")
        ids = [int(line.split(b",", 1)[0]) for line in got]
        assert ids == sorted(set(ids))  # original order, original sample_id, no duplicate
        assert all(source[line.split(b",", 1)[0]] == line for line in got)  # byte-identical
        referenced = {line.split(b",")[3] for line in got}
        rows = sample_lines(out / split / f"common_features_{split}.csv")
        indexes = [line.split(b",", 1)[0] for line in rows]
        assert set(indexes) == referenced  # no orphan index, no unused common row
        assert len(indexes) == len(referenced)
        assert all(common[line.split(b",", 1)[0]] == line for line in rows)
        order = list(common)
        assert indexes == sorted(indexes, key=order.index)  # the common file's order
        rep = report["splits"][split]
        assert rep["skeleton_lines"] == len(got) and rep["common_lines"] == len(rows)
        assert rep["missing_common_rows"] == 0
    saved = json.loads((out / "sample_report.json").read_text())
    assert saved["splits"]["train"]["strata"] == report["splits"]["train"]["strata"]
    assert "## train" in (out / "sample_report.md").read_text()


def test_selection_is_each_strata_smallest_keys(population, tmp_path, monkeypatch):
    """Brute force with the reference hash; a coarse histogram (64 buckets) makes many boundary
    candidates, so the drop-and-copy path runs."""
    monkeypatch.setattr(keys, "CELL_BUDGET", 256)
    report = run(population, tmp_path / "s", seed=5, fraction=0.03, splits=["train"])
    base = key_base(5, "train")
    per_stratum: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for line in sample_lines(population / "sample_skeleton_train.csv"):
        sid, click, conv = (int(v) for v in line.split(b",", 3)[:3])
        per_stratum.setdefault((click, conv), []).append((mix_int(sid ^ base), sid))
    expected = set()
    for row in report["splits"]["train"]["strata"]:
        chosen = sorted(per_stratum[(row["click"], row["conversion"])])[: row["n"]]
        expected |= {sid for _, sid in chosen}
    lines = sample_lines(tmp_path / "s" / "train" / "sample_skeleton_train.csv")
    assert {int(line.split(b",", 1)[0]) for line in lines} == expected


def test_same_seed_same_bytes_whatever_the_workers_and_chunks(population, tmp_path, monkeypatch):
    kw: dict[str, Any] = {"seed": 3, "margin": 0.001, "by": ["301"]}
    first = run(population, tmp_path / "a", workers=1, chunk_bytes=1 << 20, **kw)
    run(population, tmp_path / "b", workers=3, chunk_bytes=65_536, **kw)
    monkeypatch.setattr(keys, "CELL_BUDGET", 512)
    run(population, tmp_path / "c", workers=2, chunk_bytes=100_003, **kw)
    reference = _files(tmp_path / "a")
    assert len(reference) == 4
    for other in ("b", "c"):
        assert _files(tmp_path / other) == reference
        report = json.loads((tmp_path / other / "sample_report.json").read_text())
        report["output"] = first["output"]
        assert report == json.loads((tmp_path / "a" / "sample_report.json").read_text())
    run(population, tmp_path / "d", **{**kw, "seed": 4})
    assert _files(tmp_path / "d") != reference


def test_dry_run_writes_nothing(population, tmp_path):
    out = tmp_path / "nothing" / "here"
    report = run(population, out, dry_run=True, margin=0.001)
    assert not out.exists() and not out.parent.exists()
    size = report["splits"]["train"]["size"]
    assert {"population", "p", "z", "n0", "n_calculated"} <= set(size)
    assert size["z"] == pytest.approx(1.959964, abs=1e-6)
    assert sum(r["n"] for r in report["splits"]["train"]["strata"]) >= size["n"]
    assert "estimates" not in report["splits"]["train"]


def test_by_scenario(population, tmp_path):
    out = tmp_path / "s"
    report = run(population, out, fraction=0.05, by=["301"], splits=["train"])
    strata = report["splits"]["train"]["strata"]
    assert {r["by_301"] for r in strata} >= {10082134, 10082135, 10082136}
    got: dict[tuple[int, int, int], int] = {}
    for line in sample_lines(out / "train" / "sample_skeleton_train.csv"):
        scenario = int(line.split(b"301\x02", 1)[1].split(b"\x03", 1)[0])
        key = (*_labels(line), scenario)
        got[key] = got.get(key, 0) + 1
    assert got == {(r["click"], r["conversion"], r["by_301"]): r["n"] for r in strata if r["n"]}
    n = report["splits"]["train"]["size"]["n"]  # before the minimum lifted rare strata
    for r in strata:  # proportional inside each scenario too
        assert abs(r["n"] - n * r["population_share"]) < 1 or r["n"] == 1


def test_explicit_fractions(population, tmp_path):
    fractions = {"0,0": 0.01, "1,0": 0.2, "1,1": 1.0, "0,1": 1.0}
    report = run(population, tmp_path / "s", allocation="explicit", stratum_fraction=fractions)
    for rep in report["splits"].values():
        for r in rep["strata"]:
            f = fractions[f"{r['click']},{r['conversion']}"]
            assert r["n"] == int(np.ceil(f * r["N"]))


def test_nested_layout_gives_the_same_sample(population, tmp_path):
    nested = tmp_path / "raw"
    for split in SPLITS:
        (nested / split).mkdir(parents=True)
        for name in (f"sample_skeleton_{split}.csv", f"common_features_{split}.csv"):
            shutil.copy(population / name, nested / split / name)
    run(population, tmp_path / "a", fraction=0.02)
    run(nested, tmp_path / "b", fraction=0.02)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_up_to_date_output_is_kept(population, tmp_path):
    out = tmp_path / "s"
    run(population, out, fraction=0.02, splits=["test"])
    again = run(population, out, fraction=0.02, splits=["test"])
    assert again["skipped"] == "up to date"
    changed = run(population, out, fraction=0.03, splits=["test"])
    assert "skipped" not in changed


def test_output_must_not_replace_the_input(population):
    with pytest.raises(ConfigError, match="would replace the input"):
        run(population, population, fraction=0.1)
    with pytest.raises(ConfigError, match="would replace the input"):
        run(population, population.parent, fraction=0.1)


def test_lines_the_transform_rejects_are_not_sampled(population, tmp_path):
    """With --fraction 1 the sample is the valid input: bad lines are left out and counted, and
    a CRLF line is copied with its CRLF."""
    raw = tmp_path / "raw"
    raw.mkdir()
    good = sample_lines(population / "sample_skeleton_test.csv")[:300]
    crlf = good[5].replace(b"\n", b"\r\n")
    bad = [
        b"x1,0,0,0123456789abcdef,1,205\x021\x031.0\n",  # bad sample_id
        b"999001,2,0,0123456789abcdef,1,205\x021\x031.0\n",  # label out of range
        b"999002,0,0,0123456789abcdef,1\n",  # wrong column count
        b"999003,0,0,0123456789abcdef,1,205\x021\x031.0,extra\n",  # wrong column count
        b"999004,0,0,XYZ,1,205\x021\x031.0\n",  # bad index
        b"999005,0,0,0123456789abcdef,1,\xff\xfe\n",  # not UTF-8
        b"\n",  # empty
    ]
    truncated = good[-1].rstrip(b"\n")  # a last line without its newline
    body = [*good[:5], crlf, *good[6:150], *bad, *good[150:-1], truncated]
    (raw / "sample_skeleton_test.csv").write_bytes(b"".join(body))
    shutil.copy(population / "common_features_test.csv", raw / "common_features_test.csv")
    report = run(raw, tmp_path / "s", fraction=1.0)
    rep = report["splits"]["test"]
    assert rep["invalid_lines"] == len(bad) + 1
    expected = [*good[:5], crlf, *good[6:-1]]
    assert sample_lines(tmp_path / "s" / "test" / "sample_skeleton_test.csv") == expected
    assert rep["population"] == rep["sample"] == len(expected)
