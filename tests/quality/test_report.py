"""The profile report: one self-contained page whose numbers come from the database."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from deepcvr.aliccp import FIELDS
from deepcvr.cli import app
from deepcvr.metadata import MetadataStore
from deepcvr.quality import report as report_module
from deepcvr.quality.report import expected_ids, write_report
from deepcvr.quality.sources import accounting_rows, read_manifests
from tests.quality.conftest import CORPUS, Loaded, expected_rejects
from tests.quality.htmlcheck import external_references, parse

runner = CliRunner()


@pytest.fixture(scope="module")
def profile_html(profile: Loaded, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(profile.target, out, accounting_rows(read_manifests(profile.parquet), {}))
    return out.read_text(encoding="utf-8")


def test_every_plot_and_table_is_there(profile_html: str) -> None:
    page = parse(profile_html)
    ids = expected_ids(["test", "train"])
    assert len([i for i in ids if i.startswith("plot-zipf-")]) == len(FIELDS)
    for plot_or_table in ids:
        kind = "svg" if plot_or_table.startswith("plot-") else "table"
        assert page.ids.get(plot_or_table) == kind, plot_or_table
        if kind == "svg":
            assert page.children[plot_or_table] > 3, f"{plot_or_table} is empty"
    shown = {i for i in page.ids if i.startswith(("plot-", "table-")) and not i.endswith("-title")}
    assert shown == set(ids)  # nothing without a stable, expected id


def test_page_is_self_contained(profile_html: str) -> None:
    assert external_references(profile_html) == []
    assert "Content-Security-Policy" in profile_html and "default-src 'none'" in profile_html
    assert "<script" not in profile_html and "<link" not in profile_html


def _cells(html: str, table_id: str) -> list[list[str]]:
    body = html.split(f'<table id="{table_id}">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>", 1)[1])
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows
    ]


def test_numbers_come_from_the_database(profile: Loaded, profile_html: str) -> None:
    with duckdb.connect(str(profile.db), read_only=True) as con:
        strata = dict(
            con.execute(
                "SELECT click || ',' || conversion, count(*) FROM sample WHERE split = 'train' "
                "GROUP BY ALL"
            ).fetchall()
        )
        scenario_rows = con.execute(
            "SELECT count(*) FROM sample_feature t JOIN feature f USING (feature_id) "
            "WHERE f.field_id = '301' AND t.split = 'train'"
        ).fetchone()[0]  # type: ignore[index]
    train = next(r for r in _cells(profile_html, "table-strata") if r[0] == "train")
    assert train[1] == f"{sum(strata.values()):,}"
    assert train[2].startswith(f"{strata['0,0']:,} (") and train[5].startswith(f"{strata['0,1']:,}")
    scenario = [r for r in _cells(profile_html, "table-scenario") if r[1] == "train"]
    assert sum(int(r[2].replace(",", "")) for r in scenario) == scenario_rows
    accounting = _cells(profile_html, "table-accounting")
    assert {(r[0], r[1]) for r in accounting} == {
        (s, f"{name}_{s}.csv") for s in ("test", "train")
        for name in ("common_features", "sample_skeleton")
    }  # fmt: skip
    assert all(r[-1] == "holds" for r in accounting)


def test_rejects_summary_and_examples(profile_html: str) -> None:
    reasons = {(r[2], r[3]) for r in _cells(profile_html, "table-rejects")}
    assert reasons == {
        ("bad_feature_id", "rejected"),
        ("wrong_column_count", "rejected"),
        ("malformed_structure", "rejected"),
        ("duplicate_sample_id", "rejected"),
    }
    examples = _cells(profile_html, "table-reject-examples")
    where = {r[0]: r[2] for r in examples}
    assert where["wrong_column_count"] == "sample_skeleton_train.csv:3002"
    raw = next(r[5] for r in examples if r[0] == "bad_feature_id")
    assert raw == "205\\x02x\\x031.0"  # separators made visible, nothing else changed


def test_corpus_report_shows_every_reason(corpus: Loaded, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = write_report(corpus.target, out, [], examples=1)
    html = out.read_text()
    assert result["bytes"] == len(html.encode()) and result["plots"] == 2 + 2 + len(FIELDS) + 2
    reasons = {r[2] for r in _cells(html, "table-rejects")}
    assert {"invalid_utf8", "truncated_last_line", "feature_num_mismatch"} <= reasons
    assert reasons == {r[3] for r in expected_rejects()}  # every reason code of the corpus
    assert "no accounting found" in html  # none passed: said so, not left blank


def test_report_is_written_atomically(
    corpus: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.html"
    out.write_text("previous")

    def broken(*_args: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(report_module, "structure_histograms", broken)
    with pytest.raises(RuntimeError):
        write_report(corpus.target, out, [])
    assert out.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


PIPELINE = """
name: corpus
workspace: {ws}
tasks:
  transform: {{op: transform.aliccp, with: {{input: {raw}, workers: 1, max_reject_ratio: 1}}}}
  load:
    op: load.database
    needs: [transform]
    with: {{target: "duckdb:///{ws}/deepcvr.duckdb"}}
"""


def test_cli_report_finds_the_latest_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`deepcvr report` with no target: the latest load task of the workspace, or of a pipeline
    workspace below it (data/demo under data), and the accounting of its Parquet input."""
    monkeypatch.delenv("DEEPCVR_WORKSPACE", raising=False)
    raw, ws = tmp_path / "raw", tmp_path / "data" / "demo"
    shutil.copytree(CORPUS, raw)
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(ws=ws, raw=raw))
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    for workspace in (ws, tmp_path / "data"):
        result = runner.invoke(app, ["report", "--workspace", str(workspace)])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["output"] == str(ws / "report.html")
        assert summary["target"] == f"duckdb:///{ws}/deepcvr.duckdb"
        html = (ws / "report.html").read_text()
        assert all(r[-1] == "holds" for r in _cells(html, "table-accounting"))
    store = MetadataStore.for_workspace(tmp_path / "data", create=False)
    asset = store.assets()[-1]
    assert asset["kind"] == "report" and asset["bytes"] == (ws / "report.html").stat().st_size
    other = tmp_path / "other.html"
    result = runner.invoke(
        app,
        ["report", "--workspace", str(ws), "--target", summary["target"], "--output", str(other)],
    )
    assert result.exit_code == 0 and other.is_file()


def test_cli_report_without_a_load_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--workspace", str(tmp_path)])
    assert result.exit_code == 2
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: no successful load task recorded") and "--target" in error
    missing = runner.invoke(
        app, ["report", "--workspace", str(tmp_path), "--target", f"duckdb:///{tmp_path}/x.duckdb"]
    )
    assert missing.exit_code == 1 and "database not found" in missing.stderr
