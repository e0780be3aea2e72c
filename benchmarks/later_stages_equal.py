"""Same outputs before and after a change to the later stages: coordination, escalation and
exports on a simulated corpus (the planted narratives stand in for the clustering), written to
a folder whose files can be compared byte for byte with another code version's.

    PYTHONPATH=<code version> .venv/bin/python benchmarks/later_stages_equal.py N_POSTS OUT_DIR

Writes OUT_DIR/pairs.parquet, cooccurrences.parquet (the coordination result),
escalations.csv, escalations.jsonl, networks.csv, network.graphml, and prints their sha256.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def main() -> None:
    n_posts, out = int(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    from coordination_cost import planted

    from pipeline import coordination, escalate, export
    from pipeline.atomic import write_parquet
    from pipeline.config import CoordinationConfig

    corpus, posts, nid = planted(n_posts)
    n_narratives = len(corpus.truth["narratives"])
    cfg = CoordinationConfig()
    coord = coordination.run(posts, nid, cfg, seed=1)
    write_parquet(coord.pairs.reset_index(drop=True), out / "pairs.parquet")
    write_parquet(coord.cooccurrences.reset_index(drop=True), out / "cooccurrences.parquet")
    esc = escalate.run(posts, nid, coord, cfg, seed=1,
                       narrative_labels={i: f"narrative {i}" for i in range(n_narratives)})
    export.write(esc, out)
    for f in sorted(out.iterdir()):
        print(hashlib.sha256(f.read_bytes()).hexdigest()[:16], f.name)
    print("stats", coord.stats)


if __name__ == "__main__":
    main()
