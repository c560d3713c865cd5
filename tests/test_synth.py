"""The synthetic Ali-CCP generator: exact raw layout, calibration, determinism, archive mode."""

from __future__ import annotations

import math
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from deepcvr import aliccp, synth
from deepcvr.errors import ConfigError

SAMPLES = 20_000
HEX16 = re.compile(r"[0-9a-f]{16}")
ITEM = re.compile(r"([0-9_]+)\x02([1-9][0-9]*)\x03([0-9]+\.[0-9]+)")
ONE_HOT = {"101", "121", "122", "124", "125", "126", "127", "128", "129"}
ONE_HOT |= {"205", "206", "207", "210", "216", "301"}


def _lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    return data.decode("ascii").split("\n")[:-1]


def _items(feature_list: str) -> list[tuple[str, int, str]]:
    out = []
    for item in feature_list.split(aliccp.ITEM_SEP):
        m = ITEM.fullmatch(item)
        assert m, repr(item)
        out.append((m[1], int(m[2]), m[3]))
    return out


def _parse(out_dir: Path, split: str = "train") -> tuple[list[list], list[list]]:
    """Skeleton rows [id, click, conv, index, num, items] and common rows [index, num, items]."""
    skeleton = []
    for line in _lines(out_dir / aliccp.skeleton_name(split)):
        cols = line.split(",")
        assert len(cols) == 6, line[:80]
        skeleton.append([int(cols[0]), cols[1], cols[2], cols[3], int(cols[4]), _items(cols[5])])
    common = []
    for line in _lines(out_dir / aliccp.common_name(split)):
        cols = line.split(",")
        assert len(cols) == 3, line[:80]
        common.append([cols[0], int(cols[1]), _items(cols[2])])
    return skeleton, common


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    calls: list[int] = []
    result = synth.generate(out, SAMPLES, seed=7, advance=calls.append)
    skeleton, common = _parse(out)
    return out, result, calls, skeleton, common


def test_result_and_files(data) -> None:
    out, result, calls, skeleton, common = data
    assert result.files == (out / "sample_skeleton_train.csv", out / "common_features_train.csv")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in result.files)
    assert result.split == "train" and result.samples == SAMPLES == len(skeleton)
    assert result.common_rows == len(common)
    assert result.sample_structures == sum(row[4] for row in skeleton)
    assert result.common_structures == sum(row[1] for row in common)
    assert result.raw_bytes == sum(p.stat().st_size for p in result.files)
    assert sum(calls) == SAMPLES


def test_skeleton_layout(data) -> None:
    _, _, _, skeleton, _ = data
    assert [row[0] for row in skeleton] == list(range(1, SAMPLES + 1))
    for _, click, conv, index, num, items in skeleton:
        assert click in ("0", "1") and conv in ("0", "1")
        assert HEX16.fullmatch(index)
        assert num == len(items) >= 1
        assert {field for field, _, _ in items} <= set(aliccp.IMPRESSION_FIELDS)


def test_common_layout(data) -> None:
    _, _, _, _, common = data
    indexes = [row[0] for row in common]
    assert all(HEX16.fullmatch(i) for i in indexes)
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    for _, num, items in common:
        assert num == len(items) >= 1
        assert {field for field, _, _ in items} <= set(aliccp.USER_FIELDS)


def test_runs_are_contiguous_and_keys_match(data) -> None:
    _, _, _, skeleton, common = data
    runs = [row[3] for i, row in enumerate(skeleton) if i == 0 or row[3] != skeleton[i - 1][3]]
    assert len(runs) == len(set(runs)), "an index reappears after its run ended"
    assert set(runs) == {row[0] for row in common}, "every index used, every common row used"


def test_calibration(data) -> None:
    _, _, _, skeleton, common = data
    per_impression = [row[4] for row in skeleton]
    assert 10 <= sum(per_impression) / SAMPLES <= 16 and max(per_impression) <= 59
    per_common = [row[1] for row in common]
    assert 400 <= sum(per_common) / len(common) <= 800
    assert 40 <= SAMPLES / len(common) <= 80
    labels = Counter((row[1], row[2]) for row in skeleton)
    ctr = (labels["1", "0"] + labels["1", "1"]) / SAMPLES
    assert 0.03 <= ctr <= 0.05
    assert labels["0", "1"] >= 1 and labels["1", "1"] >= 1
    missing_126 = sum("126" not in {f for f, _, _ in row[2]} for row in common) / len(common)
    assert 0.4 <= missing_126 <= 0.75


def test_multi_valued_fields_repeat_with_distinct_ids(data) -> None:
    _, _, _, skeleton, common = data
    for rows, field in ((skeleton, "210"), (common, "110_14"), (common, "150_14")):
        counts = [sum(f == field for f, _, _ in row[-1]) for row in rows]
        assert max(counts) > 1, field
    for row in skeleton + common:
        keys = [(f, fid) for f, fid, _ in row[-1]]
        assert len(keys) == len(set(keys)), "a feature repeated inside one line"


def test_feature_ids_belong_to_one_field_and_recur(data) -> None:
    _, _, _, skeleton, common = data
    owner: dict[int, str] = {}
    for row in skeleton + common:
        for field, fid, _ in row[-1]:
            assert owner.setdefault(fid, field) == field, fid
    assert max(owner) < 10_200_000
    # Zipf-like popularity: a few ids recur a lot (long tail of items, few categories).
    items = Counter(fid for row in skeleton for f, fid, _ in row[-1] if f == "205")
    assert max(items.values()) >= 20
    categories = Counter(fid for row in skeleton for f, fid, _ in row[-1] if f == "206")
    assert len(categories) < SAMPLES / 2
    scenarios = Counter(fid for row in skeleton for f, fid, _ in row[-1] if f == "301")
    assert len(scenarios) == 3 and max(scenarios.values()) > SAMPLES / 2


def test_values(data) -> None:
    _, _, _, skeleton, common = data
    seen: dict[str, set[str]] = {}
    for row in skeleton + common:
        for field, _, value in row[-1]:
            seen.setdefault(field, set()).add(value)
    for field, values in seen.items():
        if field in ONE_HOT:
            assert values == {"1.0"}, field
        else:
            for v in values:
                x = float(v)
                assert math.isfinite(x) and x > 0 and repr(round(x, 5)) == v, (field, v)
    assert "0.69315" in seen["110_14"] and "1.09861" in seen["109_14"]


def test_small_and_multi_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "BLOCK", 1_000)  # runs must stay whole across block seams
    calls: list[int] = []
    result = synth.generate(tmp_path, 5_500, advance=calls.append)
    skeleton, common = _parse(tmp_path)
    assert sum(calls) == 5_500 and len(calls) == 6  # one report per block
    assert len(skeleton) == 5_500 and len(common) == result.common_rows
    runs = [row[3] for i, row in enumerate(skeleton) if i == 0 or row[3] != skeleton[i - 1][3]]
    assert len(runs) == len(set(runs)) and set(runs) == {row[0] for row in common}
    assert [row[0] for row in common] == sorted({row[0] for row in common})

    one = synth.generate(tmp_path / "one", 1)
    assert (one.samples, one.common_rows) == (1, 1)


def test_determinism(tmp_path: Path) -> None:
    def files(name: str, **kwargs) -> list[bytes]:
        result = synth.generate(tmp_path / name, 3_000, **kwargs)
        return [p.read_bytes() for p in result.files]

    assert files("a", seed=1) == files("b", seed=1)
    assert files("c", seed=2) != files("a", seed=1)
    test = files("d", seed=1, split="test")
    assert test[0][:100] != files("a", seed=1)[0][:100]


def test_archive(tmp_path: Path) -> None:
    plain = synth.generate(tmp_path / "plain", 3_000, seed=3)
    out = tmp_path / "arch"
    result = synth.generate(out, 3_000, seed=3, archive=True)
    assert result.files == (out / "sample_train.tar.gz",)
    assert [p.name for p in out.iterdir()] == ["sample_train.tar.gz"]
    assert (result.samples, result.sample_structures) == (3_000, plain.sample_structures)
    assert result.raw_bytes == plain.raw_bytes == sum(p.stat().st_size for p in plain.files)
    with tarfile.open(result.files[0], "r:gz") as tar:
        members = tar.getmembers()
        assert sorted(m.name for m in members) == sorted(p.name for p in plain.files)
        assert all(m.isreg() for m in members)
        for path in plain.files:
            member = tar.extractfile(path.name)
            assert member is not None and member.read() == path.read_bytes()
    again = synth.generate(tmp_path / "again", 3_000, seed=3, archive=True)
    assert again.files[0].read_bytes() == result.files[0].read_bytes()


def test_crash_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "BLOCK", 1_000)
    real = synth._skeleton_counts
    calls = Counter()

    def flaky(rng, n):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(rng, n)

    monkeypatch.setattr(synth, "_skeleton_counts", flaky)
    with pytest.raises(RuntimeError):
        synth.generate(tmp_path, 5_000)
    assert list(tmp_path.iterdir()) == []
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        synth.generate(tmp_path, 5_000, archive=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples": 0},
        {"samples": -5},
        {"samples": 10, "split": "valid"},
        {"samples": 10, "seed": -1},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError) as err:
        synth.generate(tmp_path / "out", **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
