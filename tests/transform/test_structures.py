"""The two structure parsers agree: the fast CSV path is taken only when it changes nothing."""

from __future__ import annotations

import polars as pl
import pytest

from deepcvr.transform import structures
from deepcvr.transform.parse import parse_chunk
from deepcvr.transform.reasons import ChunkContext
from tests.helpers import REAL_COMMON
from tests.transform.test_parse import S, ctx, line


def _both_paths(
    data: bytes, context: ChunkContext, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], bool]:
    """Tables from the normal parser and from the exact path alone, and whether fast was used."""
    used: list[bool] = []
    fast = structures._explode_fast

    def spy(lines: pl.DataFrame) -> pl.DataFrame | None:
        out = fast(lines)
        used.append(out is not None)
        return out

    monkeypatch.setattr(structures, "_explode_fast", spy)
    normal = parse_chunk(data, context).tables
    monkeypatch.setattr(structures, "_explode_fast", lambda lines: None)
    exact = parse_chunk(data, context).tables
    monkeypatch.setattr(structures, "_explode_fast", fast)
    return normal, exact, any(used)


def _assert_same(normal: dict[str, pl.DataFrame], exact: dict[str, pl.DataFrame]) -> None:
    assert normal.keys() == exact.keys()
    for name in normal:
        assert normal[name].schema == exact[name].schema, name
        assert normal[name].equals(exact[name]), name


def test_clean_lines_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    items = "\x01".join(["210\x02100\x030.69315", "210\x02101\x033.28343", "205\x029\x031.0"])
    data = line(1, items) + line(2, S) + line(3, items)
    normal, exact, used_fast = _both_paths(data, ctx(), monkeypatch)
    assert used_fast
    _assert_same(normal, exact)
    assert normal["sample_feature"].get_column("position").to_list() == [0, 1, 2, 0, 0, 1, 2]


def test_real_common_lines_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    normal, exact, used_fast = _both_paths(REAL_COMMON.read_bytes(), ctx("common"), monkeypatch)
    assert used_fast
    _assert_same(normal, exact)


@pytest.mark.parametrize(
    "bad",
    [
        " 205\x021\x031.0",  # blanks the CSV reader would skip but the casts refuse
        "205\x02 1\x031.0",
        "205\x021\x03 1.0",
        "205\x02\t1\x031.0",
        "205\x021\x031.0\r",
        "205\x031\x021.0",  # separators swapped
        "205\x021\x031.0\x021",  # one separator too many
        "205\x021",  # one too few
        "205\x00\x021\x031.0",  # a control byte inside a token
        "205\x02\x031.0",  # empty tokens
        "\x021\x031.0",
        "205\x021\x03",
        "205\x022147483648\x031.0",  # beyond INTEGER
        "205\x021\x031e400",  # not finite
        "205\x020\x031.0",
        "999\x021\x031.0",
        "205\x02é\x031.0",
        '205\x02"1"\x031.0',
        "205\x021\x031.0.0",
    ],
)
def test_anything_to_reject_gives_the_exact_paths_rows(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = line(1, S) + line(2, "\x01".join([S, bad, "206\x022\x030.5"])) + line(3, S)
    normal, exact, used_fast = _both_paths(data, ctx(), monkeypatch)
    assert not used_fast
    _assert_same(normal, exact)
    assert normal["rejects"].height >= 1


def test_a_cross_chunk_verdict_sends_the_chunk_to_the_exact_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A feature id another chunk gave to field 206 is rejected here, with its reason."""
    data = line(1, S) + line(2, "206\x025\x031.0")
    context = ctx(field_of={1: "206"})
    normal, exact, _ = _both_paths(data, context, monkeypatch)
    _assert_same(normal, exact)
    assert normal["rejects"].get_column("reason").to_list() == ["feature_field_conflict"]


def test_feature_pairs_are_distinct_and_sorted_by_id_then_field() -> None:
    ids = [7, 3, 7, 10_000_000, 3, 1, 7, 3]
    codes = [2, 5, 2, 0, 4, 22, 1, 5]  # id 3 under two fields, id 7 twice under field 2
    got = structures.feature_pairs(
        pl.DataFrame(
            {"feature_id": ids, "field_code": codes},
            schema={"feature_id": pl.Int32, "field_code": pl.UInt8},
        )
    )
    assert got.schema == pl.Schema({"feature_id": pl.Int32, "field_code": pl.UInt8})
    assert list(got.iter_rows()) == sorted(set(zip(ids, codes, strict=True)))
