"""Language identification speed: the batched classifiers of pipeline/lang.py against the
one-text-at-a-time paths they replace, on the distinct texts of a simulated corpus.

    .venv/bin/python benchmarks/run.py langid

- py3langid: ``LanguageIdentifier._decide`` per text (the library's own path: a byte
  automaton walked in Python) against ``lang.Py3Langid.probs`` on all texts at once; the
  largest difference of any probability is reported beside the speed.
- Latin-script naive Bayes: the sum over each text's features (character n-grams and words,
  ``lang.features``) against ``LatinClassifier.scores_many`` (a per-word table).
- ``lang.detect_many`` end to end: texts per second, and how many texts got each language.
Each path runs once on the same texts in the same process, cold (the word table and the
code-point table start empty), so the ratios are measured side by side.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_POSTS = 40_000


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench(n_posts: int = N_POSTS) -> dict:
    import os

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from run import machine

    from pipeline import lang, simulate

    corpus = simulate.simulate(simulate.SimConfig(seed=21, n_posts=n_posts,
                                                  n_accounts=max(160, n_posts // 20)))
    texts = list(dict.fromkeys(corpus.posts["text"].astype(str)))
    load = os.getloadavg()

    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    reference = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    batched = lang.Py3Langid()
    want, ref_wall, ref_cpu = _timed(lambda: np.array([reference._decide(t) for t in texts]))
    got, new_wall, new_cpu = _timed(lambda: batched.probs(texts))

    nb = lang.latin_classifier()

    def per_text_nb():
        out = []
        for t in texts:
            feats = lang.features(t)
            idx = [i for i in map(nb.vocab.get, feats) if i is not None]
            out.append(nb.log_prob[idx].sum(axis=0) + (len(feats) - len(idx)) * nb.log_unseen)
        return np.array(out)

    nb_ref, nb_ref_wall, nb_ref_cpu = _timed(per_text_nb)
    nb_new, nb_new_wall, nb_new_cpu = _timed(lambda: nb.scores_many([lang.words(t)
                                                                     for t in texts]))
    codes, det_wall, det_cpu = _timed(lambda: lang.detect_many(texts))
    rows = [
        {"part": "py3langid", "baseline": "LanguageIdentifier._decide per text",
         "batched": "lang.Py3Langid.probs", "baseline_wall": round(ref_wall, 2),
         "batched_wall": round(new_wall, 2), "baseline_cpu": round(ref_cpu, 2),
         "batched_cpu": round(new_cpu, 2), "ratio_wall": round(ref_wall / new_wall, 1),
         "ratio_cpu": round(ref_cpu / new_cpu, 1),
         "agreement": f"largest probability difference {np.abs(got - want).max():.1e}, "
                      f"best language equal on {np.mean(got.argmax(1) == want.argmax(1)):.2%}"},
        {"part": "Latin naive Bayes", "baseline": "sum over each text's features",
         "batched": "LatinClassifier.scores_many (per-word table)",
         "baseline_wall": round(nb_ref_wall, 2), "batched_wall": round(nb_new_wall, 2),
         "baseline_cpu": round(nb_ref_cpu, 2), "batched_cpu": round(nb_new_cpu, 2),
         "ratio_wall": round(nb_ref_wall / nb_new_wall, 1),
         "ratio_cpu": round(nb_ref_cpu / nb_new_cpu, 1),
         "agreement": "best class equal on "
                      f"{np.mean(nb_ref.argmax(1) == nb_new.argmax(1)):.2%}"},
    ]
    return {"name": "langid", "machine": machine(),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ".venv/bin/python benchmarks/run.py langid",
            "load_average": [round(x, 2) for x in load], "n_posts": n_posts,
            "n_texts": len(texts), "rows": rows,
            "detect_many": {"wall_seconds": round(det_wall, 2), "cpu_seconds": round(det_cpu, 2),
                            "texts_per_second": round(len(texts) / det_wall),
                            "languages": dict(Counter(codes).most_common())}}


def render(res: dict) -> list[str]:
    d = res["detect_many"]
    lines = [f"{res['n_texts']:,} distinct texts of a simulated corpus of {res['n_posts']:,} "
             f"posts (seed 21), one process, cold; load average at the start "
             f"{res['load_average'][0]}.", "",
             "| part | one text at a time | batched | wall s (one / batched) | CPU s | "
             "ratio wall | ratio CPU | agreement |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['part']} | {r['baseline']} | {r['batched']} | "
                     f"{r['baseline_wall']} / {r['batched_wall']} | "
                     f"{r['baseline_cpu']} / {r['batched_cpu']} | {r['ratio_wall']}x | "
                     f"{r['ratio_cpu']}x | {r['agreement']} |")
    langs = ", ".join(f"{k} {v:,}" for k, v in d["languages"].items())
    lines += ["", f"`lang.detect_many` end to end: {d['texts_per_second']:,} texts/s "
                  f"({d['wall_seconds']} s wall, {d['cpu_seconds']} s CPU); {langs}.", ""]
    return lines
