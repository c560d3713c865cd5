"""The report in a real browser: headless Chromium renders every plot and table, and the page
asks the network for nothing.

Network: Chromium's net log records every URL request with its initiator; requests the page
makes carry the page's origin, the browser's own background requests (update checks, sign-in)
carry none. A canary page with external references proves the detector sees page loads. No host
name resolves (`--host-resolver-rules`), so nothing leaves the machine either way.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from deepcvr.quality.report import expected_ids, write_report
from deepcvr.quality.sources import accounting_rows, read_manifests
from tests.quality.conftest import Loaded
from tests.quality.htmlcheck import external_references, parse
from tests.servers import unavailable

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
]
BACKGROUND = "not an origin"  # the initiator of the browser's own requests in the net log
CANARY = """<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="http://example.com/s.css"></head><body><p id="x">x</p>
<img src="https://example.org/i.png"><div style="background:url(http://example.net/b.png)">y</div>
</body></html>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("chromium not installed")
    return exe


def run_chromium(page: Path, tmp: Path, *args: str) -> tuple[str, str, Path]:
    """Open `page` once; returns (stdout, stderr, net log path)."""
    netlog = tmp / "netlog.json"
    command = [
        chromium(),
        *FLAGS,
        f"--user-data-dir={tmp / 'profile'}",
        f"--log-net-log={netlog}",
        "--virtual-time-budget=5000",
        *args,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr, netlog


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself requested (any scheme but file:, which serves the page)."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a browser killed mid-write leaves the event list open
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    starts = [
        event.get("params") or {}
        for event in log["events"]
        if names.get(event["type"]) == "URL_REQUEST_START_JOB"
    ]
    return [
        p["url"]
        for p in starts
        if "url" in p
        and p.get("initiator", BACKGROUND) != BACKGROUND
        and not p["url"].startswith("file:")
    ]


@pytest.fixture(scope="module")
def report_file(profile: Loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chromium()  # skip (or fail under CI) before building the database
    out = tmp_path_factory.mktemp("browser") / "report.html"
    write_report(profile.target, out, accounting_rows(read_manifests(profile.parquet), {}))
    return out


def test_detector_sees_what_a_page_loads(tmp_path: Path) -> None:
    page = tmp_path / "canary.html"
    page.write_text(CANARY)
    assert len(external_references(CANARY)) == 4  # the static check finds them too
    _out, _err, netlog = run_chromium(page, tmp_path, "--dump-dom")
    assert set(page_requests(netlog)) >= {
        "http://example.com/s.css",
        "https://example.org/i.png",
        "http://example.net/b.png",
    }


def test_report_renders_every_plot_and_table_offline(report_file: Path, tmp_path: Path) -> None:
    assert external_references(report_file.read_text()) == []
    dom, stderr, netlog = run_chromium(report_file, tmp_path, "--dump-dom")
    page = parse(dom)
    for element in expected_ids(["test", "train"]):
        kind = "svg" if element.startswith("plot-") else "table"
        assert page.ids.get(element) == kind, f"{element} missing from the rendered DOM"
        if kind == "svg":
            assert page.children[element] > 3, f"{element} rendered empty"
    assert page_requests(netlog) == []
    # The page's CSP would block an external load; the console would then say so.
    assert "Content Security Policy" not in stderr


def test_report_screenshot(report_file: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_chromium(
        report_file,
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2400)
    assert len(data) > 60_000  # a blank page compresses to a few kB; tables and plots do not
