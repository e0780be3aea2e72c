"""Untrusted text and privacy: post text, names, hashtags, links and ids are written by the actors
under investigation. They never run in the report, never become spreadsheet formulas, never drive
the terminal, and with --pseudonymise no raw account id (nor the key) reaches an export."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import config, embed, privacy, runner, simulate
from pipeline.atomic import FORMULA_STARTS, restore_formula, write_csv
from pipeline.cli import app
from tests.conftest import HashingEmbedder
from tests.test_report import CHROME_FLAGS, _chromium

ROOT = Path(__file__).resolve().parent.parent
KEY = "k3y-" + "0123456789abcdef" * 2  # never in any output
FORMULAS = ["=HYPERLINK(\"http://evil.test\",\"x\")", "+1+1", "-2+3", "@SUM(1)", "\t=1", "\r=1"]
PAYLOADS = {  # each would set document.title, or mark the body, if it ever ran
    "text": "<script>document.title='PWNED-text'</script>",
    "img": "<img src=x onerror=\"document.title='PWNED-img'\">",
    "close": "</script><script>document.title='PWNED-close'</script>",
    "svg": "<svg/onload=document.title='PWNED-svg'>",
    "js": "javascript:document.title='PWNED-js'",
}
ANSI = "\x1b[2J\x1b[31mRED\x1b]0;title\x07\x9b1m"


def handle(account_id: str) -> str:
    return f"Handle_{account_id}_QZ"  # not hex: cannot turn up inside a digest by chance


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("untrusted")
    sim = simulate.simulate(simulate.SimConfig(seed=4, n_posts=400, n_accounts=40,
                                               network_size=8))
    posts, accounts = sim.posts.copy(), sim.accounts.copy()
    posts["account_id"] = posts["account_id"].map(handle)
    accounts["account_id"] = accounts["account_id"].map(handle)
    truth = {**sim.truth, "accounts": {handle(a): v for a, v in sim.truth["accounts"].items()}}
    payloads = list(PAYLOADS.values())
    for i in range(0, len(posts), 9):
        k = i // 9
        posts.loc[i, "text"] = f"{payloads[k % len(payloads)]} {posts.loc[i, 'text']} {ANSI}"
        posts.loc[i, "hashtags"] = (f"{payloads[(k + 1) % len(payloads)].replace(' ', '')} "
                                    "pwn</script>")
        posts.loc[i, "url"] = [PAYLOADS["js"], "http://x.test/\"><script>alert(1)</script>",
                               "http://<img src=x onerror=alert(1)>/"][k % 3]
    for i in range(4, len(posts), 23):
        posts.loc[i, "text"] = f"{FORMULAS[(i // 23) % len(FORMULAS)]} {posts.loc[i, 'text']}"
    coordinated = sorted(a for a, v in truth["accounts"].items() if v["role"] == "coordinated")
    names = [PAYLOADS["img"], PAYLOADS["close"], "=cmd|' /C calc'!A0", "@SUM(A1)"]
    for a, name in zip(coordinated, names):
        posts.loc[posts["account_id"] == a, "account_name"] = name
    corpus = base / "corpus"
    simulate.write_corpus(simulate.Corpus(posts=posts, accounts=accounts, truth=truth), corpus)
    with open(corpus / "posts.csv", "a", encoding="utf-8") as fh:
        fh.write('=1+1,ragged,row\n@evil,"\t=2",2021-01-01,only four\n')  # -> rejects.csv
    return corpus, sorted(set(posts["account_id"]))


@pytest.fixture(scope="module")
def plain_run(hostile_corpus, tmp_path_factory):
    corpus, _ = hostile_corpus
    out = tmp_path_factory.mktemp("plain") / "run"
    cfg = config.load(None, [f"embed.cache_dir={out.parent / 'cache'}", "reduce.method=none"])
    result = runner.cluster_corpus(corpus, out, cfg, embedder=HashingEmbedder())
    assert len(result.escalation.accounts) > 0
    return out


def cells(path: Path):
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            yield from row


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def test_every_csv_output_neutralises_formulas(plain_run, tmp_path):
    export = CliRunner().invoke(app, ["export", str(plain_run), "--format", "csv", "--out",
                                      str(tmp_path / "exports")])
    assert export.exit_code == 0, export.output
    paths = sorted(plain_run.glob("*.csv")) + sorted((tmp_path / "exports").glob("*.csv"))
    assert {p.name for p in paths} >= {"rejects.csv", "narratives.csv", "escalations.csv",
                                       "networks.csv"}
    seen_neutralised = set()
    for path in paths:
        for cell in cells(path):
            if cell.startswith(FORMULA_STARTS):
                assert NUMBER.fullmatch(cell), (path.name, cell[:80])  # a number is no formula
            if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
                seen_neutralised.add(path.name)
    # the hostile cells really reached these files, neutralised
    assert {"rejects.csv", "escalations.csv"} <= seen_neutralised, seen_neutralised


def test_formula_neutralisation_round_trips(tmp_path):
    values = ["=1", "'=1", "''=1", "'", "'x", "-", "plain", "@a", "\t=1", "\r=1", "", "+"]
    write_csv(pd.DataFrame({"v": values}), tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv", keep_default_na=False, dtype=str)["v"].map(
        restore_formula)
    assert back.tolist() == values
    assert not [c for c in cells(tmp_path / "x.csv") if c.startswith(FORMULA_STARTS)]


def test_terminal_output_strips_escape_sequences(plain_run, tmp_path):
    posts = pd.read_parquet(plain_run / "posts.parquet")
    # ingest already drops C0 controls (ESC) from post text; C1 controls such as CSI stay
    assert posts["text"].str.contains("\x9b", regex=False).any()
    assert not posts["text"].str.contains("\x1b", regex=False).any()
    # and a run whose files carry ESC sequences (written by another tool, or edited) is safe too
    run = tmp_path / "run"
    shutil.copytree(plain_run, run)
    table = pd.read_csv(run / "narratives.csv", keep_default_na=False, dtype=str)
    table["label"] = table["label"] + ANSI
    table["example_text"] = ANSI + table["example_text"]
    table.to_csv(run / "narratives.csv", index=False)
    details = json.loads((run / "narratives.json").read_text(encoding="utf-8"))
    for d in details["narratives"]:
        for x in d["examples"]:
            x["text"] = ANSI + x["text"]
            x["account_id"] = "\x1b[31m" + x["account_id"]
    (run / "narratives.json").write_text(json.dumps(details), encoding="utf-8")
    shown = [CliRunner().invoke(app, ["narratives", str(run)])]
    shown += [CliRunner().invoke(app, ["narrative", str(run), str(n)])
              for n in table["narrative_id"]]
    for result in shown:
        assert result.exit_code == 0, result.output
        bad = [c for c in result.output if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) < 0xa0]
        assert not bad, [hex(ord(c)) for c in bad[:5]]
    assert all("RED" in r.output for r in shown)  # the text itself is still shown


def test_no_injected_script_runs_in_the_report(plain_run, tmp_path):
    chromium = _chromium()
    html = (plain_run / "report.html").read_text(encoding="utf-8")
    assert "pwn&lt;/script&gt;" in html or "pwn\\u003c/script\\u003e" in html  # hashtags there
    url = (plain_run / "report.html").resolve().as_uri()
    dom = subprocess.run([chromium, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    title = re.search(r"<title>(.*?)</title>", rendered, re.S).group(1)
    assert title.startswith("Lockstep report") and "PWNED" not in title
    assert re.search(r'<svg id="map"[^>]*data-rendered="\d+"', rendered)  # our script ran
    assert not re.search(r"<script>[^<]*PWNED", rendered)
    assert not re.search(r"<img[^>]*onerror", rendered, re.I)
    assert "PWNED" not in dom.stderr


def raw_strings(path: Path) -> str:
    """A file's text as an analyst's tools would see it (Parquet decompressed)."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas().to_csv(index=False)
    if path.suffix == ".npy":
        return ""
    return path.read_bytes().decode("utf-8", "replace")


def test_pseudonymised_run_exports_no_raw_id_and_never_the_key(hostile_corpus, tmp_path,
                                                                monkeypatch):
    corpus, ids = hostile_corpus
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    monkeypatch.setitem(embed.TIERS, "quality", lambda cfg: HashingEmbedder())
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["cluster", str(corpus), "--out", str(out), "--pseudonymise",
                                      "--set", f"embed.cache_dir={tmp_path / 'cache'}",
                                      "--set", "reduce.method=none"])
    assert result.exit_code == 0, result.output
    exported = CliRunner().invoke(app, ["export", str(out), "--format", "jsonl", "--out",
                                        str(tmp_path / "exports")])
    assert exported.exit_code == 0, exported.output
    # the run's working tables restate the corpus (raw ids by necessity); everything else is an
    # export and must hold pseudonyms only
    working = {"posts.parquet", "accounts.parquet", "rejects.csv"}
    files = [p for p in [*out.rglob("*"), *(tmp_path / "exports").rglob("*")] if p.is_file()]
    checked = 0
    for path in files:
        text = raw_strings(path)
        assert KEY not in text and KEY not in path.read_bytes().decode("latin-1"), path
        if path.name in working or ".lockstep" in path.parts:
            continue
        checked += 1
        leaked = [a for a in ids if a in text]
        assert not leaked, (path.name, leaked[:3])
    assert checked >= 10
    assert "acct_" in (out / "escalations.csv").read_text(encoding="utf-8")
    assert "Handle_" not in result.output  # the terminal tables are pseudonymised too
    # a rerun resumes; the escalation shown is still pseudonymised, once
    again = CliRunner().invoke(app, ["cluster", str(corpus), "--out", str(out), "--pseudonymise",
                                     "--set", f"embed.cache_dir={tmp_path / 'cache'}",
                                     "--set", "reduce.method=none"])
    assert again.exit_code == 0 and "Handle_" not in again.output
    shown = re.findall(r"acct_[0-9a-f]{8,}", result.output)  # (cut short to fit the table)
    assert shown and re.findall(r"acct_[0-9a-f]{8,}", again.output) == shown


def test_an_unexpected_error_shows_no_local_variables(tmp_path):
    script = (
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from pipeline import runner\n"
        "def boom(*args, **kwargs):\n"
        "    secret_handle = 'SECRET' + '-LOCAL-' + 'VALUE'\n"
        "    post_text = secret_handle * 2\n"
        "    raise RuntimeError('something broke')\n"
        "runner.cluster_corpus = boom\n"
        "from pipeline.cli import app\n"
        "app(prog_name='lockstep')\n" % str(ROOT))
    (tmp_path / "c.csv").write_text("post_id,account_id,created_at,text\n1,a,2021-01-01,x\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", script, "cluster", str(tmp_path / "c.csv"),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 1
    assert "something broke" in proc.stderr  # the error itself is reported
    assert "SECRET-LOCAL-VALUE" not in proc.stdout + proc.stderr
    assert "secret_handle =" not in proc.stderr  # no locals panel
