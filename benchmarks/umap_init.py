"""UMAP's starting layout (`reduce.init`): repeatability across processes and NMI.

    .venv/bin/python benchmarks/umap_init.py repeat VECTORS.npy INIT   # prints a digest of the coords
    .venv/bin/python benchmarks/umap_init.py nmi VECTORS.npy SET.tsv INIT

VECTORS.npy is a finished run's `.lockstep/vectors.npy` (rows in the order of the set's lines
for `nmi`), so only reduce, cluster and refine run, with the default config otherwise. Run
`repeat` twice, each in a fresh process, to see whether two processes lay out the same input
alike.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import cluster, config, reduce, refine  # noqa: E402


def main(argv: list[str]) -> None:
    what, vectors_path, init = argv[0], argv[1], argv[-1]
    vectors = np.load(vectors_path)
    cfg = config.load(overrides=[f"reduce.init={init}"])
    t0 = time.perf_counter()
    coords = reduce.run(vectors, cfg.reduce, cfg.run.seed)
    if what == "repeat":
        digest = hashlib.sha256(np.ascontiguousarray(coords).tobytes()).hexdigest()[:12]
        print(json.dumps({"init": init, "coords_sha256": digest,
                          "seconds": round(time.perf_counter() - t0, 1)}))
        return
    from sklearn.metrics import normalized_mutual_info_score

    labels = [line.partition("\t")[0] for line in
              Path(argv[2]).read_text(encoding="utf-8").splitlines()]
    refined = refine.run(cluster.run(coords, cfg.cluster).labels, vectors, cfg.refine)
    print(json.dumps({"init": init, "nmi": round(normalized_mutual_info_score(
        labels, refined.labels), 4), "narratives": int(refined.labels.max() + 1),
        "noise": round(float((refined.labels < 0).mean()), 3),
        "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
