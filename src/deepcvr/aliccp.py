"""Facts about the Ali-CCP dataset: files, separators and the 23 fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "test")

# Raw separators inside `feature_list`.
ITEM_SEP = "\x01"
FIELD_SEP = "\x02"
VALUE_SEP = "\x03"

SKELETON_COLUMNS = (
    "sample_id",
    "click",
    "conversion",
    "common_feature_index",
    "feature_num",
    "feature_list",
)
COMMON_COLUMNS = ("common_feature_index", "feature_num", "feature_list")


def archive_name(split: str) -> str:
    return f"sample_{split}.tar.gz"


def skeleton_name(split: str) -> str:
    return f"sample_skeleton_{split}.csv"


def common_name(split: str) -> str:
    return f"common_features_{split}.csv"


def raw_files(raw_dir: Path, split: str) -> tuple[Path, Path]:
    """(common file, skeleton file) of one split inside a raw directory."""
    return raw_dir / common_name(split), raw_dir / skeleton_name(split)


def splits_present(raw_dir: Path) -> list[str]:
    """Splits whose two raw CSVs are both in `raw_dir` (or in `raw_dir/{split}/`)."""
    found = []
    for split in SPLITS:
        for base in (raw_dir / split, raw_dir):
            if all(p.is_file() for p in raw_files(base, split)):
                found.append(split)
                break
    return found


def split_dir(raw_dir: Path, split: str) -> Path:
    """The directory holding a split's raw files: `raw_dir/{split}/` if present, else `raw_dir`."""
    nested = raw_dir / split
    return nested if all(p.is_file() for p in raw_files(nested, split)) else raw_dir


@dataclass(frozen=True)
class Field:
    field_id: str
    name: str
    entity: str  # user / item / combination / context
    multi_valued: bool
    description: str


FIELDS: tuple[Field, ...] = (
    Field("101", "user_id", "user", False, "user id"),
    Field("121", "user_profile_category", "user", False, "categorical id of the user profile"),
    Field("122", "user_profile_group", "user", False, "categorical group id of the user profile"),
    Field("124", "user_gender", "user", False, "gender"),
    Field("125", "user_age_group", "user", False, "age group"),
    Field("126", "user_consumption_level_1", "user", False, "consumption level, type I"),
    Field("127", "user_consumption_level_2", "user", False, "consumption level, type II"),
    Field("128", "user_occupation", "user", False, "occupation (working or not)"),
    Field("129", "user_geography", "user", False, "geography"),
    Field(
        "109_14",
        "user_categories_14d",
        "user",
        True,
        "categories the user interacted with in the last 14 days, with log count",
    ),
    Field(
        "110_14",
        "user_shops_14d",
        "user",
        True,
        "shops the user interacted with in the last 14 days, with log count",
    ),
    Field(
        "127_14",
        "user_brands_14d",
        "user",
        True,
        "brands the user interacted with in the last 14 days, with log count",
    ),
    Field(
        "150_14",
        "user_intentions_14d",
        "user",
        True,
        "intention nodes the user interacted with in the last 14 days, with log count",
    ),
    Field("205", "item_id", "item", False, "item id"),
    Field("206", "item_category", "item", False, "item category"),
    Field("207", "item_shop", "item", False, "item shop"),
    Field("210", "item_intentions", "item", True, "item intention nodes"),
    Field("216", "item_brand", "item", False, "item brand"),
    Field("508", "user_category_x_item_category", "combination", False, "109_14 x 206"),
    Field("509", "user_shop_x_item_shop", "combination", False, "110_14 x 207"),
    Field("702", "user_brand_x_item_brand", "combination", False, "127_14 x 216"),
    Field("853", "user_intention_x_item_intention", "combination", True, "150_14 x 210"),
    Field("301", "scenario", "context", False, "position / business scenario category"),
)

FIELD_IDS: frozenset[str] = frozenset(f.field_id for f in FIELDS)
USER_FIELDS: tuple[str, ...] = tuple(f.field_id for f in FIELDS if f.entity == "user")
IMPRESSION_FIELDS: tuple[str, ...] = tuple(f.field_id for f in FIELDS if f.entity != "user")
