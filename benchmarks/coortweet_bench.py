"""CooRTweet baseline on the German elections 2021 set shipped with CooRTweet (218,971 shares).

    .venv/bin/python benchmarks/run.py coortweet          # once registered in run.py's BENCHES
    .venv/bin/python benchmarks/coortweet_bench.py        # prints the result as JSON

For each object type (url_id, hashtag_id, domain_id, phash_id) the input is built the way the
CooRTweet vignette builds it: object_id = that column, content_id = post_id, timestamp_share =
timestamp; rows deduplicated on the four columns; rows without the object dropped. Each type runs
`pipeline.coortweet.run(time_window=60, min_participation=2, edge_weight=0.5)` in a fresh Python
process, so its peak RSS (getrusage ru_maxrss) is its own and not the high-water mark of an
earlier type. `seconds` is the run only; loading the CSV is `load_seconds`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LOCKSTEP_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA = SHARED / "coordination" / "german_elections.csv"
OBJECT_TYPES = ("url_id", "hashtag_id", "domain_id", "phash_id")
PARAMS = {"time_window": 60, "min_participation": 2, "edge_weight": 0.5}
COMMAND = ".venv/bin/python benchmarks/run.py coortweet"


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def prepare(raw, object_type: str):
    """The CooRTweet input for one object type, as the package's vignette prepares it."""
    import pandas as pd

    df = pd.DataFrame({"object_id": raw[object_type], "account_id": raw["account_id"],
                       "content_id": raw["post_id"], "timestamp_share": raw["timestamp"]})
    df = df[df["object_id"].notna() & (df["object_id"] != "")]
    df = df.drop_duplicates(["object_id", "account_id", "content_id", "timestamp_share"])
    return df.reset_index(drop=True)


def bench_one(object_type: str) -> dict:
    """Load, prepare and run one object type in this process; the row for the results table."""
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    from pipeline import coortweet

    t0 = time.perf_counter()
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    raw["timestamp"] = pd.to_numeric(raw["timestamp"]).astype("int64")
    df = prepare(raw, object_type)
    del raw
    load_seconds = time.perf_counter() - t0
    rss_loaded = _peak_rss_mb()
    result = coortweet.run(df, **PARAMS)
    s = result.stats
    return {
        "object_type": object_type,
        "n_shares": s["n_shares"],
        "n_objects": s["n_objects"],
        "n_pairs": s["n_pairs"],
        "edges": s["n_edges"],
        "edges_above_threshold": s["n_edges_above_threshold"],
        "edge_weight_threshold": s["edge_weight_threshold"],
        "accounts": s["n_accounts"],
        "accounts_above_threshold": s["n_accounts_above_threshold"],
        "seconds": s["seconds"],
        "load_seconds": round(load_seconds, 2),
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def bench() -> dict:
    out = {"name": "coortweet",
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": COMMAND, "params": PARAMS, "data": str(DATA), "rows": []}
    if not DATA.exists():
        out["note"] = (f"{DATA} not found; set LOCKSTEP_SHARED_DATA to the folder holding "
                       "coordination/german_elections.csv")
        return out
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for object_type in OBJECT_TYPES:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one",
                               object_type], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True)
        out["rows"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(bench_one(sys.argv[2])))
    else:
        print(json.dumps(bench(), indent=2))
