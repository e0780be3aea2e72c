"""The install-time numba warm-up runs the real jobs on a corpus big enough to take the code
paths a large corpus takes. (The warm-up itself runs in `make install`, not here: with an empty
cache it compiles for minutes.)"""

import inspect

import umap.umap_

from pipeline import assign, jitwarm, runner


def test_the_warm_up_fits_on_a_sample_past_umaps_small_data_path_and_places_the_rest(
        monkeypatch):
    # umap fits fewer than 4,096 rows with exact distances, not the nearest-neighbour descent
    # (and index) a large corpus uses: the warm-up must compile the latter
    assert "X[index].shape[0] < 4096" in inspect.getsource(umap.umap_.UMAP.fit)
    calls = []

    def cluster(corpus, out_dir, cfg, **kw):
        n_posts = sum(1 for _ in open(corpus / "posts.csv", encoding="utf-8")) - 1
        calls.append(("cluster", n_posts, cfg.cluster.fit_sample, cfg.cluster.place_method,
                      cfg.embed.tier, kw["model_dir"] is not None))

    monkeypatch.setattr(runner, "cluster_corpus", cluster)
    monkeypatch.setattr(assign, "assign_corpus", lambda *a, **kw: calls.append(("assign",)))
    jitwarm.warm()
    (name, n_posts, fit, place, tier, saves_model), assigned = calls
    assert name == "cluster" and fit >= 4096 and n_posts > fit and place == "knn"
    assert tier == "fast" and saves_model and assigned == ("assign",)
