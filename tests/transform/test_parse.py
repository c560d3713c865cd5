"""The chunk parser: exact structures, every reject with its reason, on real and made-up bytes."""

from __future__ import annotations

import polars as pl
import pytest

from deepcvr.transform import reasons as P
from deepcvr.transform.parse import ChunkContext, has_index, parse_chunk, sorted_index_numbers
from deepcvr.transform.structures import FIELD_IDS
from tests.helpers import REAL_COMMON, raw_structures

IDX = "0123456789abcdef"


def ctx(kind: str = "skeleton", **kw: object) -> ChunkContext:
    base = dict(split="train", kind=kind, file_name="f.csv", first_line=1, byte_offset=0)
    base.update(kw)
    return ChunkContext(**base)  # type: ignore[arg-type]


def line(
    sid: object, items: str, click: object = 0, conv: object = 0, idx: str = IDX, num: object = None
) -> bytes:
    n = items.count("\x01") + 1 if num is None else num
    return f"{sid},{click},{conv},{idx},{n},{items}\n".encode()


S = "205\x021\x031.0"  # a good structure


def test_real_common_lines_parse_exactly() -> None:
    data = REAL_COMMON.read_bytes()
    result = parse_chunk(data, ctx("common"))
    groups = result.tables["common_feature_group"]
    assert groups.get_column("common_feature_index").to_list() == [
        "84dceed2e3a667f8",
        "0000350f0c2121e7",
    ]
    assert groups.get_column("num_features").to_list() == [343, 811]
    feats = result.tables["common_feature"]
    assert feats.height == 343 + 811
    assert result.tables["rejects"].is_empty()
    fields = dict(
        zip(
            result.tables["features"]["feature_id"],
            [FIELD_IDS[code] for code in result.tables["features"]["field_code"]],
            strict=True,
        )
    )
    for raw_line in data.decode().splitlines():
        idx, _, flist = raw_line.split(",")
        expected = raw_structures(flist)
        got = feats.filter(pl.col("common_feature_index") == idx).sort("position")
        assert got.get_column("position").to_list() == list(range(len(expected)))
        assert [
            (fields[f], f, v) for f, v in zip(got["feature_id"], got["value"], strict=True)
        ] == expected
    assert result.stats["raw_structures"] == result.stats["loaded_structures"] == 1154


def test_values_keep_full_precision_and_repeated_fields() -> None:
    items = "\x01".join(["210\x02100\x030.69315", "210\x02101\x033.28343", "210\x02100\x031.4272"])
    result = parse_chunk(line(1, items), ctx())
    feats = result.tables["sample_feature"]
    assert feats.get_column("value").to_list() == [0.69315, 3.28343, 1.4272]
    assert feats.get_column("position").to_list() == [0, 1, 2]
    assert feats.get_column("feature_id").to_list() == [100, 101, 100]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1,0,0," + IDX.encode() + b",1\n", P.WRONG_COLUMN_COUNT),
        (line(1, S + ",x"), P.WRONG_COLUMN_COUNT),
        (line("x", S), P.BAD_SAMPLE_ID),
        (line(0, S), P.BAD_SAMPLE_ID),
        (line(1, S, click="a"), P.BAD_LABEL),
        (line(1, S, conv=2), P.LABEL_OUT_OF_RANGE),
        (line(1, S, idx="XYZ"), P.BAD_COMMON_INDEX),
        (line(1, S, idx="0123456789ABCDEF"), P.BAD_COMMON_INDEX),
        (line(1, S, num="n"), P.BAD_FEATURE_NUM),
        (line(1, "", num=0), P.EMPTY_FEATURE_LIST),
        (b"1,0,0," + IDX.encode() + b",1,205\x021\x031.0", P.TRUNCATED_LAST_LINE),
        (b"1,0,0,0123456789abcde\xff,1,205\x021\x031.0\n", P.INVALID_UTF8),
    ],
)
def test_line_rejects(raw: bytes, reason: str) -> None:
    result = parse_chunk(raw, ctx())
    rejects = result.tables["rejects"]
    assert rejects.get_column("reason").to_list() == [reason]
    assert rejects.get_column("line").to_list() == [1]
    assert rejects.get_column("action").to_list() == [P.REJECTED]
    assert result.tables["sample"].is_empty()
    s = result.stats
    assert s["lines"] == s["loaded_lines"] + s["rejected_lines"] == 1
    assert s["raw_structures"] == s["loaded_structures"] + s["rejected_structures"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("205\x021", P.MALFORMED_STRUCTURE),
        ("2051\x031.0", P.MALFORMED_STRUCTURE),
        ("", P.MALFORMED_STRUCTURE),
        ("999\x021\x031.0", P.UNKNOWN_FIELD),
        ("205\x02x1\x031.0", P.BAD_FEATURE_ID),
        ("205\x02-4\x031.0", P.BAD_FEATURE_ID),
        ("205\x021\x03abc", P.BAD_VALUE),
        ("205\x021\x03nan", P.BAD_VALUE),
    ],
)
def test_structure_rejects_keep_the_rest_of_the_line(bad: str, reason: str) -> None:
    items = "\x01".join([S, bad, "206\x022\x030.5"])
    result = parse_chunk(line(7, items), ctx())
    rejects = result.tables["rejects"]
    assert rejects.get_column("reason").to_list() == [reason]
    assert rejects.get_column("position").to_list() == [1]
    assert rejects.get_column("raw").to_list() == [bad]
    feats = result.tables["sample_feature"]
    assert feats.get_column("position").to_list() == [0, 2]  # the gap shows where it was
    s = result.stats
    assert s["raw_structures"] == 3 == s["loaded_structures"] + s["rejected_structures"]


def test_flags_crlf_duplicates_orphans_conflicts_and_line_numbers() -> None:
    data = b"".join(
        [
            line(1, S),
            line(2, S, num=5),  # declared 5, has 1: kept and flagged
            line(3, S).replace(b"\n", b"\r\n"),  # CRLF: accepted and counted
            line(1, S),  # duplicate sample id
            line(4, S, idx="fedcba9876543210"),  # orphan
            line(5, "206\x021\x031.0"),  # feature 1 already belongs to field 205
        ]
    )
    result = parse_chunk(
        data,
        ctx(
            first_line=101,
            byte_offset=5000,
            common_indexes=sorted_index_numbers(pl.Series([IDX])),
        ),
    )
    rejects = result.tables["rejects"].sort("line")
    assert rejects.select("line", "reason", "action").rows() == [
        (102, P.FEATURE_NUM_MISMATCH, P.FLAGGED),
        (104, P.DUPLICATE_SAMPLE_ID, P.REJECTED),
        (105, P.ORPHAN_COMMON_INDEX, P.REJECTED),
        (106, P.FEATURE_FIELD_CONFLICT, P.REJECTED),
    ]
    first_bytes = len(line(1, S)) + len(line(2, S, num=5)) + len(line(3, S)) + 1
    assert rejects.get_column("byte_offset")[1] == 5000 + first_bytes
    assert result.tables["sample"].get_column("sample_id").to_list() == [1, 2, 3, 5]
    assert result.stats["crlf_lines"] == 1
    assert result.stats["flagged_lines"] == 1
    assert result.tables["sample"].get_column("num_features").to_list() == [1, 5, 1, 1]


def test_post_pass_verdicts_are_applied() -> None:
    data = line(1, S) + line(2, "206\x029\x031.0")
    result = parse_chunk(data, ctx(reject_lines={1: P.DUPLICATE_SAMPLE_ID}, field_of={9: "205"}))
    assert result.tables["rejects"].select("line", "reason").rows() == [
        (1, P.DUPLICATE_SAMPLE_ID),
        (2, P.FEATURE_FIELD_CONFLICT),
    ]


def test_orphan_lookup_covers_the_whole_64_bit_range() -> None:
    known = sorted_index_numbers(
        pl.Series(["ffffffffffffffff", "0000000000000000", "8000000000000000", "bad"])
    )
    asked = pl.Series(["ffffffffffffffff", "fffffffffffffffe", "0000000000000000", "zz", None])
    assert has_index(known, asked).to_list() == [True, False, True, False, False]
    assert has_index(known[:0], asked).to_list() == [False] * 5
