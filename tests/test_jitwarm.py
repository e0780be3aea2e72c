"""The install-time numba warm-up runs the real jobs on a corpus big enough to take the code
paths a large corpus takes. (The warm-up itself runs in `make install`, not here: with an empty
cache it compiles for minutes.)"""

import inspect

import umap.umap_

from pipeline import assign, config, jitwarm, runner, sampling


def test_the_warm_up_takes_umaps_large_and_small_data_paths(monkeypatch):
    # umap fits fewer than 4,096 rows with exact distances, not the nearest-neighbour descent
    # (and index) a large corpus uses: the warm-up must compile both, the large one with a fit
    # sample and the rest placed, then assign; the small one (the bundled sample's) with an
    # update after it
    assert "X[index].shape[0] < 4096" in inspect.getsource(umap.umap_.UMAP.fit)
    calls = []

    def cluster(corpus, out_dir, cfg, **kw):
        n_posts = sum(1 for _ in open(corpus / "posts.csv", encoding="utf-8")) - 1
        calls.append(("cluster", n_posts, cfg.cluster.fit_sample, cfg.cluster.place_method,
                      cfg.embed.tier, kw.get("model_dir") is not None, kw.get("update", False),
                      out_dir, sampling.needs_reducer(cfg.cluster, cfg.cluster.fit_sample,
                                                      n_posts - cfg.cluster.fit_sample)))

    monkeypatch.setattr(runner, "cluster_corpus", cluster)
    monkeypatch.setattr(assign, "assign_corpus", lambda *a, **kw: calls.append(("assign",)))
    jitwarm.warm()
    large, assigned, small, update = calls
    (name, n_posts, fit, place, tier, saves_model, updates, _, searches_index) = large
    assert name == "cluster" and fit >= 4096 and n_posts > fit and place == "knn"
    # its few placed posts search UMAP's index (the machine code a large corpus runs), not
    # the exact neighbours they would otherwise get; the budget is restored after
    knn = config.load(None, ["cluster.place_method=knn"]).cluster
    assert searches_index and not sampling.needs_reducer(knn, fit, n_posts - fit)
    assert tier == "fast" and saves_model and not updates and assigned == ("assign",)
    assert small[1] < 4096 and small[1] <= small[2] and not small[6]
    assert update[1] > small[1] and update[1] < 4096 and update[6] and update[7] == small[7]
