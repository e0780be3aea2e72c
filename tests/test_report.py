"""The HTML report: self-contained, escaped, and rendered by a real headless Chromium."""

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from pipeline import config, runner, simulate
from tests.conftest import HashingEmbedder

HOSTILE = [
    "<script>document.body.setAttribute('data-pwned','script')</script>",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">",
    "javascript:document.body.setAttribute('data-pwned','js')",
    "</script><script>document.body.setAttribute('data-pwned','close')</script>",
    "<svg onload=\"document.body.setAttribute('data-pwned','svg')\"></svg>",
]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A simulated corpus whose posts and account names carry script injections."""
    base = tmp_path_factory.mktemp("report")
    corpus = base / "corpus"
    sim = simulate.simulate(simulate.SimConfig(seed=4, n_posts=600, n_accounts=50,
                                               network_size=8))
    posts = sim.posts.copy()
    for i, payload in enumerate(HOSTILE):
        posts.loc[i * 7, "text"] = f"{payload} {posts.loc[i * 7, 'text']}"
    coordinated = [a for a, v in sim.truth["accounts"].items() if v["role"] == "coordinated"]
    posts.loc[posts["account_id"] == coordinated[0], "account_name"] = HOSTILE[1]
    posts.loc[posts["account_id"] == coordinated[1], "account_name"] = HOSTILE[3]
    posts.loc[3, "url"] = "javascript:alert(1)"
    simulate.write_corpus(simulate.Corpus(posts=posts, accounts=sim.accounts, truth=sim.truth),
                          corpus)
    cfg = config.load(None, [f"embed.cache_dir={base / 'cache'}"])
    result = runner.cluster_corpus(corpus, base / "run", cfg, embedder=HashingEmbedder())
    assert len(result.escalation.accounts) > 0  # the escalations section is exercised
    return base / "run"


def test_report_is_self_contained_and_escaped(hostile_run):
    text = (hostile_run / "report.html").read_text(encoding="utf-8")
    for payload in HOSTILE:
        if "<" in payload:
            assert payload not in text
    # a javascript: URL is only dangerous as a link target, and the report makes no links
    assert not re.search(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", text, re.I)
    assert "&lt;script&gt;document.body.setAttribute" in text
    assert "&lt;img src=x onerror=" in text
    # nothing is fetched: no external script, style, image, font or frame
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text, re.I)
    assert "@import" not in text and "url(http" not in text
    assert 'http-equiv="Content-Security-Policy"' in text and "default-src 'none'" in text
    # exactly one executable script (ours) and one inert data block
    assert len(re.findall(r"<script>", text)) == 1
    assert len(re.findall(r'<script type="application/json"', text)) == 1
    for section in ("overview", "narratives", "map-section", "timelines", "escalations"):
        assert f'id="{section}"' in text


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI runs this")
    return path


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
                "--v=0", "--virtual-time-budget=5000"]


def test_report_renders_in_headless_chromium_without_errors(hostile_run, tmp_path):
    chromium = _chromium()
    url = (hostile_run / "report.html").resolve().as_uri()
    common = [chromium, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the report's own script ran (under its CSP) and drew every map point
    match = re.search(r'<svg id="map"[^>]*data-rendered="(\d+)"', html)
    assert match and int(match.group(1)) == len(pd.read_parquet(hostile_run / "map.parquet"))
    assert html.count("<circle") == int(match.group(1))
    assert re.search(r'<section id="escalations">', html)
    assert html.count('class="timeline"') >= 1
    # no injected script ran
    body = re.search(r"<body[^>]*>", html).group(0)
    assert "data-pwned" not in body
    # no console error, no CSP violation, no failed load
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Refused" in line
               or "Uncaught" in line]
    assert not console, console
    shot = hostile_run / "report.png"
    proc = subprocess.run([*common, "--window-size=1280,2000", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000
