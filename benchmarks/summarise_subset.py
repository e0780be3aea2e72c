"""narratives.run on the first N posts of a finished run (its labels, random seeded vectors),
the details and table written to OUT.json with sorted keys, so two versions of the code or two
settings can be compared byte for byte (cmp) or by summarise_scale.compare.

    python benchmarks/summarise_subset.py RUN_DIR N OUT.json [--set summarise.key=value ...]

Three posts are altered to exercise edge cases: post 5 is a bare link, post 7 has no language
(guessed from the script) and post 9 is empty.
"""
import json
import sys

import numpy as np
import pandas as pd

from pipeline import config, narratives

run, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = config.load(None, [a for a in sys.argv[4:] if a != "--set"])
posts = pd.read_parquet(run + "/posts.parquet").iloc[:n].reset_index(drop=True)
labels = pd.read_parquet(run + "/assignments.parquet")["narrative_id"].to_numpy()[:n]
posts.loc[5, "text"] = "https://x.com/a"
posts.loc[7, "lang"] = ""
posts.loc[9, "text"] = ""
vectors = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
s = narratives.run(posts, labels, vectors, cfg.summarise, cfg.run.seed)
with open(out, "w") as fh:
    json.dump({"details": s.details, "table": s.table.astype(str).to_dict("records")}, fh,
              default=str, ensure_ascii=False, indent=0, sort_keys=True)
