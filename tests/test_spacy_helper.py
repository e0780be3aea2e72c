"""The spaCy helper process (pipeline/spacy_helper.py): forked at a run's start, it analyses the
summaries' English texts as this process would, and this process then never loads spaCy's
English pipeline for a few hundred texts. The checks that fork run in a new interpreter, where
no other thread runs (this one has pytest's and earlier tests' threads)."""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import fresh_python
from pipeline import narratives, spacy_helper
from pipeline.config import SummariseConfig

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux only")


def test_the_helper_analyses_as_this_process_would_and_this_one_loads_no_english_pipeline():
    # a helper analyses two passes (with NER, without); then the same with its process killed
    # first: this process analyses every text itself, and says so; then one process alone
    printed = fresh_python.run("""
    import json, logging, os, signal, sys
    from pipeline import narratives, simulate, spacy_helper
    from pipeline.config import SummariseConfig

    texts = simulate.simulate(simulate.SimConfig(seed=5, n_posts=300, multilingual=0.0)).posts
    items = [(t, "en" if i % 5 else "latin") for i, t in enumerate(texts["text"])]
    passes = [(items[:120], True), (items[120:], False)]
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    cfg = SummariseConfig(n_process=2, batch_size=16, cache_dir="")
    helper = spacy_helper.start(cfg)
    got = narratives.analyse_passes(passes, cfg, helper=helper)
    out = {"got": got, "loaded_here": narratives.english.cache_info().currsize,
           "helper_pid": helper.ready.result(), "pid": os.getpid()}
    os.kill(helper.ready.result(), signal.SIGKILL)
    while True:  # until it has ended (the pool's own thread may reap it first: no waitpid)
        try:
            with open(f"/proc/{helper.ready.result()}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:  # gone (while being read, too)
            break
    out["after_kill"] = narratives.analyse_passes(passes, cfg, helper=helper)
    helper.close()
    out["alone"] = narratives.analyse_passes(
        passes, SummariseConfig(n_process=1, batch_size=16, cache_dir=""))
    print(json.dumps(out))
    """)
    out = json.loads(printed.splitlines()[-1])
    assert out["helper_pid"] != out["pid"]
    assert out["loaded_here"] == 0  # 300 texts: the helper did them all
    alone = out["alone"]
    assert any(ents for _, ents in alone[0]) and all(ents is None for _, ents in alone[1])
    assert out["got"] == alone
    assert out["after_kill"] == out["got"]
    assert "an analysis process failed" in printed


def test_the_helper_ends_when_the_run_is_killed():
    # a killed run's helper would wait for tasks forever on pipes it holds both ends of, and
    # keep the output pipes of whoever started the run open
    pid = _killed_run_helper_pid()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _killed_run_helper_pid() -> int:
    code = textwrap.dedent("""
    import os, signal
    from pipeline import spacy_helper
    from pipeline.config import SummariseConfig
    helper = spacy_helper.start(SummariseConfig(n_process=2))
    print(helper.ready.result(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """)
    # the killed interpreter's output ends when every process holding its pipe has ended:
    # this returns only once the helper has (or fails on the timeout)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -9, done.stderr[-3000:]
    return int(done.stdout.split()[0])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:  # gone (while being read, too)
        return False


def test_no_helper_with_other_threads_running_or_with_one_analysis_process():
    assert spacy_helper.start(SummariseConfig(n_process=1)) is None
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert spacy_helper.start(SummariseConfig(n_process=2)) is None
    finally:
        stop.set()
        thread.join()


def test_a_ready_helper_is_worth_it_from_the_first_text():
    cfg = SummariseConfig(n_process=2)
    assert narratives.analysis_processes(cfg, 300) == 1
    assert narratives.analysis_processes(cfg, 300, helper=True) == 2
    assert narratives.analysis_processes(cfg, 0, helper=True) == 1
    assert narratives.analysis_processes(SummariseConfig(n_process=1), 300, helper=True) == 1
    many = 4 * narratives.MIN_TEXTS_PER_PROCESS
    assert narratives.analysis_processes(SummariseConfig(n_process=4), many, helper=True) == 4



def test_a_run_with_the_helper_writes_what_a_run_without_it_writes(tmp_path):
    # `lockstep cluster` in a new process has the helper, and runs the coordination stage while
    # the helper analyses; in this process, with one analysis process, neither: same bytes
    from pipeline import config, runner, simulate
    from tests.conftest import HashingEmbedder
    from tests.test_determinism import FILES, differing

    corpus = tmp_path / "corpus"
    simulate.write_corpus(simulate.simulate(simulate.SimConfig(
        seed=11, n_posts=400, n_accounts=40, network_size=7)), corpus)
    cfg = config.load(None, [f"embed.cache_dir={tmp_path / 'a-cache'}",
                             "summarise.cache_dir=", "summarise.n_process=1"])
    alone = runner.cluster_corpus(corpus, tmp_path / "a", cfg, embedder=HashingEmbedder())
    assert list(alone.stages).index("summarise") < list(alone.stages).index("coordination")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "lockstep_driver.py"), "-v", "cluster",
         str(corpus), "--out", str(tmp_path / "b"), "--set",
         f"embed.cache_dir={tmp_path / 'b-cache'}", "--set", "summarise.cache_dir=",
         "--set", "summarise.n_process=2",
         "--no-save-model"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the helper analysed every text (287: too few for this process to load spaCy too)
    assert re.search(r" 0 of \d+ analysis tasks done in this process", proc.stderr)
    stages = list(json.loads((tmp_path / "b" / "manifest.json").read_text())["stages"])
    assert stages.index("coordination") < stages.index("summarise")  # ran meanwhile
    assert not differing(tmp_path / "a", tmp_path / "b")
