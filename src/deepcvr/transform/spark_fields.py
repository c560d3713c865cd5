"""Which field owns each feature id, in Spark SQL, without a hash map keyed by every id.

The rule of structures.py: a feature id belongs to the field of its first valid structure
(earlier splits first, then common file before skeleton, then line, then position); later ones
under another field are rejected. In real data each field has its own block of ids, so nearly
every id is claimed by one field, which then owns it.

So the decision starts from bit masks: for each field and block of 64 ids, which of them the
field's valid structures claim. That aggregation keeps ~1 entry per 64 ids (157 k for 23 M
structures at 1 M impressions; 1.6 s) where one keyed by feature id keeps an entry per id (4.6 M;
6.5 s), and a hash map that size misses the CPU caches on nearly every row. Only contested ids,
claimed by two fields here or by another field in a finished split, are decided one by one.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from deepcvr.transform.spark_sql import union_all
from deepcvr.transform.spark_structures import field_code, field_name

BLOCK_SHIFT = 6  # 64 ids per block: one bit each in a long
KIND_RANK = {"common": 0, "skeleton": 1}


def _claims_of(ids: DataFrame) -> DataFrame:
    """(code, block, bits) of rows (feature_id, code): bit i of `bits` is id block * 64 + i."""
    return ids.groupBy("code", F.shiftright("feature_id", BLOCK_SHIFT).alias("block")).agg(
        F.bit_or(F.expr("shiftleft(1L, feature_id & 63)")).alias("bits")
    )


def _valid(
    structs: list[tuple[str, DataFrame]], *columns: str | Column | Callable[[str], Column]
) -> DataFrame:
    """Valid structures of every file (kind, structures) as one frame of `columns`, where a
    column may be a function of the kind."""
    return union_all(
        df.filter(F.col("rcode") == 0).select(
            *(c if isinstance(c, str | Column) else c(kind) for c in columns)
        )
        for kind, df in structs
    )


def structure_tally(structs: list[tuple[str, DataFrame]]) -> DataFrame:
    """(file, rcode, code, block, bits, n): the structures of each file (its index in
    `structs`, (kind, structures) per file) per reason code (0 = valid), the valid ones also
    per field and 64-id block with the ids they claim (`bits`; code, block and bits are null
    for rejects). One pass over the structures gives the claims and the structure counters
    (a second pass over the caches of 23 M structures to count them cost ~0.5 s a run)."""
    valid = F.col("rcode") == 0
    union = union_all(
        df.select(
            F.lit(i).alias("file"),
            "rcode",
            F.when(valid, F.col("code")).alias("code"),
            F.when(valid, F.shiftright("feature_id", BLOCK_SHIFT)).alias("block"),
            F.when(valid, F.expr("shiftleft(1L, feature_id & 63)")).alias("bit"),
        )
        for i, (_, df) in enumerate(structs)
    )
    return union.groupBy("file", "rcode", "code", "block").agg(
        F.bit_or("bit").alias("bits"), F.count(F.lit(1)).alias("n")
    )


def tally_claims(tally: DataFrame) -> DataFrame:
    """(code, block, bits): the ids of each 64-id block that each field's valid structures
    claim, from `structure_tally`."""
    return (
        tally.filter(F.col("rcode") == 0)
        .groupBy("code", "block")
        .agg(F.bit_or("bits").alias("bits"))
    )


def contested_blocks(claims: DataFrame, prior: DataFrame | None) -> DataFrame:
    """(block, contested): the ids of a block that two or more fields claim, counting a
    finished split's decision as a claim; only blocks that have such ids. `prior` is
    (feature_id, code), one code per id."""
    both = claims if prior is None else claims.unionByName(_claims_of(prior))
    per_field = both.groupBy("code", "block").agg(F.bit_or("bits").alias("bits"))
    # Over a block's masks (one per field), the bits already seen in an earlier mask.
    twice = F.expr(
        "aggregate(masks, named_struct('seen', 0L, 'twice', 0L), (acc, m) -> "
        "named_struct('seen', acc.seen | m, 'twice', acc.twice | (acc.seen & m))).twice"
    )
    return (
        per_field.groupBy("block")
        .agg(F.collect_list("bits").alias("masks"))
        .select("block", twice.alias("contested"))
        .filter(F.col("contested") != 0)
    )


def _ids_of(masks: DataFrame, bits: Column) -> DataFrame:
    """(code, feature_id) for every bit set in `bits` of rows (code, block, ...)."""
    set_bits = F.expr("explode(filter(sequence(0, 63), i -> shiftright(m, i) & 1L = 1L))")
    return (
        masks.select("code", "block", bits.alias("m"))
        .select("code", "block", set_bits.alias("i"))
        .select("code", (F.col("block") * 64 + F.col("i")).cast("int").alias("feature_id"))
    )


def _first(kind: str) -> Column:
    """A structure's place in the split with its field code in the low 5 bits, so one min()
    gives both the first place and its field: common before skeleton, line, position."""
    return (
        F.lit(KIND_RANK[kind]) * F.lit(1 << 55)
        + F.col("line") * F.lit(1 << 21)
        + F.col("position").cast("long") * F.lit(32)
        + F.col("code").cast("long")
    )


def contested_winners(
    structs: list[tuple[str, DataFrame]], contested: DataFrame, prior: DataFrame | None
) -> DataFrame:
    """(feature_id, winner) of every contested id: the field that owns it, a finished split's
    decision or else the field of its first structure here. Every contested id is claimed
    here by a field other than its winner, so these are exactly the ids whose structures
    under another field are rejected. One pass over the structures keeps the contested ids:
    a join on their block (a small table), then a test of their bit."""
    in_block = _valid(
        structs,
        "feature_id",
        F.shiftright("feature_id", BLOCK_SHIFT).alias("block"),
        lambda kind: _first(kind).alias("first"),
    ).join(F.broadcast(contested), "block")
    firsts = (
        in_block.filter(F.expr("shiftright(contested, feature_id & 63) & 1L = 1L"))
        .groupBy("feature_id")
        .agg(F.min("first").alias("first"))
    )
    winner = (F.col("first") % 32).cast("tinyint")
    if prior is not None:
        firsts = firsts.join(prior.withColumnRenamed("code", "prior"), "feature_id", "left")
        winner = F.coalesce(F.col("prior"), winner)
    return firsts.select("feature_id", winner.alias("winner"))


def feature_table(claims: DataFrame, winners: DataFrame | None) -> DataFrame:
    """The split's feature table: every id under the field that claims it here, except that a
    contested id appears only under its winner, and only if the winner claims it here."""
    ids = _ids_of(claims, F.col("bits"))
    if winners is not None:
        # `winners` comes broadcast-hinted when it is small (the engine's Job.small).
        ids = ids.join(winners, "feature_id", "left").filter(
            F.col("winner").isNull() | (F.col("code") == F.col("winner"))
        )
    return ids.select("feature_id", field_name(F.col("code")).alias("field_id"))


def prior_codes(table: DataFrame, rank: int) -> DataFrame:
    """A finished split's feature table as decided (feature_id, code, rank)."""
    return table.select(
        F.col("feature_id").cast("int"),
        field_code(F.col("field_id")).alias("code"),
        F.lit(rank).alias("rank"),
    )


def merge_prior(parts: list[DataFrame]) -> DataFrame | None:
    """Earlier decisions first: the lowest rank wins a feature id."""
    if not parts:
        return None
    return union_all(parts).groupBy("feature_id").agg(F.min_by("code", "rank").alias("code"))
