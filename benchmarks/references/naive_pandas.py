"""Reference: the row-wise pandas parser public Ali-CCP preprocessors use (for comparison only).

One Python loop over lines and structures, lists of tuples, a pandas DataFrame, Parquet out.
"""

import sys
from pathlib import Path

import pandas as pd

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for split_dir in sorted(p for p in raw.iterdir() if p.is_dir()):
    split = split_dir.name
    rows, feats = [], []
    with open(split_dir / f"common_features_{split}.csv", encoding="utf-8") as f:
        for line in f:
            idx, num, flist = line.rstrip("\n").split(",")
            rows.append((split, idx, int(num)))
            for pos, item in enumerate(flist.split("\x01")):
                field, rest = item.split("\x02")
                fid, value = rest.split("\x03")
                feats.append((split, idx, pos, int(fid), float(value)))
    pd.DataFrame(rows, columns=["split", "common_feature_index", "num_features"]).to_parquet(
        out / f"{split}_common_feature_group.parquet"
    )
    pd.DataFrame(
        feats, columns=["split", "common_feature_index", "position", "feature_id", "value"]
    ).to_parquet(out / f"{split}_common_feature.parquet")
    rows, feats = [], []
    with open(split_dir / f"sample_skeleton_{split}.csv", encoding="utf-8") as f:
        for line in f:
            sid, click, conv, idx, num, flist = line.rstrip("\n").split(",")
            rows.append((split, int(sid), int(click), int(conv), idx, int(num)))
            for pos, item in enumerate(flist.split("\x01")):
                field, rest = item.split("\x02")
                fid, value = rest.split("\x03")
                feats.append((split, int(sid), pos, int(fid), float(value)))
    pd.DataFrame(
        rows,
        columns=[
            "split",
            "sample_id",
            "click",
            "conversion",
            "common_feature_index",
            "num_features",
        ],
    ).to_parquet(out / f"{split}_sample.parquet")
    pd.DataFrame(
        feats, columns=["split", "sample_id", "position", "feature_id", "value"]
    ).to_parquet(out / f"{split}_sample_feature.parquet")
