"""The `lockstep` command. Thin: parse arguments, call a plain function, print, set exit codes.

Exit codes: 0 success, 1 bad input (the message names file, row, column and fix), 2 usage or
configuration error. This is the only module that installs logging handlers.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from .errors import LockstepError

# Nothing is ever downloaded: models come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# umap, pynndescent and hdbscan compile their numba functions on first use (tens of seconds);
# numba keeps the machine code only where it may write. One per-user folder, chosen before numba
# is imported, so every later run starts warm wherever it is launched from (make sets its own).
os.environ.setdefault("NUMBA_CACHE_DIR", str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lockstep" / "numba"))

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.toml"
MODELS_DIR = Path("models")  # fitted narrative models, beside runs/ (git ignores models/*/)

app = typer.Typer(
    name="lockstep",
    help="Find networks of accounts that push the same narratives in sync.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold post text and account handles
    rich_markup_mode=None,
)
out = Console()
err = Console(stderr=True)
log = logging.getLogger("pipeline")


def entry() -> None:
    """The `lockstep` program (the console script, and ``python -m pipeline.cli``): a process
    that runs one command, then exits (pipeline/settle.py)."""
    from . import settle

    settle.one_job()
    sys.exit(app())


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False,
                          rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def handle_errors(fn: Callable) -> Callable:
    """Turn LockstepError into a one-line message on stderr and its exit code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LockstepError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished outputs are intact, rerun to redo the rest")
            raise typer.Exit(130) from None

    return wrapper


def _progress_factory() -> Callable[[str], Callable[[int, int], None]] | None:
    """A rich progress bar per long stage, only when stderr is a terminal."""
    if not err.is_terminal:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    def factory(description: str) -> Callable[[int, int], None]:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                            transient=True)
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            if not progress.live.is_started and total:
                progress.start()
            progress.update(task, completed=done, total=total)
            if done >= total:
                progress.stop()

        return update

    return factory


PSEUDO_HELP = ("Replace account ids in every export with a keyed HMAC (key from "
               "$LOCKSTEP_PSEUDONYM_KEY or --key-file; never written out).")
KEY_HELP = "File holding the pseudonymisation key."
UPDATE_HELP = ("--out holds a finished run of an earlier version of CORPUS: keep its fit, embed and "
               "place only the new posts (falls back to a full run, with the reason, if the fit "
               "config changed or earlier posts were removed or changed).")


def _key(pseudonymise: bool, key_file: Optional[Path]) -> Optional[bytes]:
    if not pseudonymise:
        if key_file is not None:
            from .errors import ConfigError

            raise ConfigError("--key-file is only used with --pseudonymise; add --pseudonymise")
        return None
    from .privacy import load_key

    return load_key(key_file)


def _load_config(config: Optional[Path], sets: Optional[List[str]]):
    from . import config as config_mod

    return config_mod.load(config if config else DEFAULT_CONFIG, sets)


@app.command("cluster")
@handle_errors
def cluster_cmd(
    corpus: Path = typer.Argument(..., help="Folder or CSV/JSONL/Parquet file of posts."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder [runs/<corpus>]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config [configs/default.toml]."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: section.key=value."),
    pseudonymise: bool = typer.Option(False, "--pseudonymise", help=PSEUDO_HELP),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help=KEY_HELP),
    codebook: Optional[Path] = typer.Option(None, "--codebook",
                                            help="YAML codebook of narrative names [codebook.path]."),
    model_name: Optional[str] = typer.Option(None, "--model-name",
                                             help="Save the fitted model as models/NAME [corpus]."),
    save_model: bool = typer.Option(True, "--save-model/--no-save-model",
                                    help="Save the fitted narrative model under models/."),
    engine: Optional[str] = typer.Option(None, "--engine",
                                         help="local | dask [engine.name in the config]."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Dask scheduler address; none starts a local cluster."),
    update: bool = typer.Option(False, "--update", help=UPDATE_HELP),
) -> None:
    """Find the narratives in a corpus and write them under runs/<corpus>/.

    With --update, the output folder holds a finished run of an earlier version of the corpus:
    its fitted model is kept (no UMAP/HDBSCAN refit), earlier posts keep their narratives, only
    new posts are embedded and placed, and summaries, coordination, escalation, exports and the
    report are redone on the whole corpus. A changed fit config or a removed or changed earlier
    post falls back to a full run, with the reason. See README, "Incremental runs"."""
    from . import settle

    # In a process that runs one job and exits (``entry``): what the imports make is left out
    # of the cycle collector's passes (pipeline/settle.py). A full collection walked it all: the
    # runner's one per stage and Python's own cost about 3 s of a 55,000-post update
    # (benchmarks/RESULTS.md, incremental). Nothing but imports has run: nothing to collect.
    # Called from Python (tests, notebooks), the collector is left alone.
    with settle.importing("the imports", collect=False):
        from . import display, runner
    sets = list(sets or [])
    if engine is not None:
        sets.append(f"engine.name={engine}")
    if scheduler is not None:
        sets.append(f"engine.scheduler={scheduler}")
        if engine is None:
            sets.append("engine.name=dask")
    cfg = _load_config(config, sets)
    if codebook is not None:
        from dataclasses import replace

        cfg = replace(cfg, codebook=replace(cfg.codebook, path=str(codebook)))
    key = _key(pseudonymise, key_file)
    target = out_dir or Path("runs") / runner.corpus_name(corpus)
    model_dir = None
    if save_model:
        from .model import check_name

        model_dir = MODELS_DIR / check_name(model_name or runner.corpus_name(corpus))
    elif model_name is not None:
        from .errors import ConfigError

        raise ConfigError("--model-name is only used when the model is saved; drop "
                          "--no-save-model or --model-name")
    result = runner.cluster_corpus(corpus, target, cfg, progress=_progress_factory(),
                                   pseudonymise_key=key, model_dir=model_dir, update=update)
    out.print(display.narratives_table(result.summary.table, result.summary.n_noise,
                                       len(result.posts), f"Narratives in {corpus}"))
    esc = result.escalation
    if key is not None and not result.pseudonymised:
        from .privacy import pseudonymise_escalation

        esc = pseudonymise_escalation(esc, key)
    out.print(display.escalations_table(esc.accounts, esc.networks))
    display.print_counts(out, result.ingest_stats, target / "rejects.csv")
    out.print(f"outputs: {target}/ (report.html, posts.parquet, assignments.parquet, "
              "narratives.csv, escalations.csv, networks.csv, network.graphml, rejects.csv, "
              "manifest.json)",
              highlight=False, markup=False)
    display.print_refine(out, result.stages.get("cluster", {}))
    note = result.stages.get("cluster", {}).get("update")
    if note:
        out.print(f"update: {note['n_new']:,} new posts placed with the earlier run's fit "
                  f"({note['new_placed_in_narratives']:,} in narratives, "
                  f"{note['new_left_as_noise']:,} noise); {note['n_posts_earlier']:,} earlier "
                  "posts keep their narratives" + ("; a full refit is recommended (see the "
                                                   "warnings above)" if note["warnings"] else ""),
                  highlight=False, markup=False)
    if model_dir is not None:
        out.print(f"model: {model_dir}/ (card.json; label new posts with `lockstep assign "
                  f"CORPUS --model {model_dir}`)", highlight=False, markup=False)


@app.command("assign")
@handle_errors
def assign_cmd(
    corpus: Path = typer.Argument(..., help="Folder or CSV/JSONL/Parquet file of new posts."),
    model: Path = typer.Option(..., "--model", help="A saved model folder (models/<name>)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder "
                                                               "[runs/<corpus>-assign]."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config for ingest and "
                                                                 "assign [configs/default.toml]."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: section.key=value."),
) -> None:
    """Label new posts with a saved narrative model (no refit); list emerging candidates."""
    from . import assign, display, runner

    cfg = _load_config(config, sets)
    target = out_dir or Path("runs") / f"{runner.corpus_name(corpus)}-assign"
    result = assign.assign_corpus(corpus, model, target, cfg, progress=_progress_factory())
    out.print(display.assign_table(result.counts, result.n_unassigned, len(result.posts),
                                   f"Posts of {corpus} per narrative of {model}"))
    out.print(display.emerging_table(result.emerging.groups))
    display.print_counts(out, result.ingest_stats, target / "rejects.csv")
    out.print(f"outputs: {target}/ (assignments.parquet, summary.csv, summary.json, "
              "emerging.csv, emerging.json, posts.parquet, rejects.csv)",
              highlight=False, markup=False)


@app.command("narrative")
@handle_errors
def narrative_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder (runs/<corpus>)."),
    narrative_id: int = typer.Argument(..., help="The narrative id, as in `lockstep narratives`."),
) -> None:
    """Show one narrative in full: terms, examples, top accounts, posts per day."""
    import json

    import pandas as pd

    from . import display, runner
    from .errors import InputError

    table = runner.read_narratives(run_dir)
    runner.require(run_dir, ["narratives.json", "posts.parquet", "assignments.parquet"])
    rows = table[table["narrative_id"] == narrative_id]
    if rows.empty:
        raise InputError(f"{run_dir} has no narrative {narrative_id}; its narratives are "
                         f"{', '.join(map(str, table['narrative_id']))}")
    details = {int(d["narrative_id"]): d for d in json.loads(
        (run_dir / "narratives.json").read_text(encoding="utf-8"))["narratives"]}
    posts = pd.read_parquet(run_dir / "posts.parquet", columns=["post_id", "created_at"])
    assign = pd.read_parquet(run_dir / "assignments.parquet", columns=["narrative_id"])
    day = posts["created_at"].dt.floor("D")
    index = pd.date_range(day.min(), day.max(), freq="D")
    per_day = day[assign["narrative_id"].to_numpy() == narrative_id].value_counts().reindex(
        index, fill_value=0).tolist()
    for part in display.narrative_panel(rows.iloc[0].to_dict(), details.get(narrative_id, {}),
                                        per_day, str(index[0].date()) if len(index) else ""):
        out.print(part)


@app.command("escalate")
@handle_errors
def escalate_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run folder (runs/<corpus>)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: section.key=value."),
    pseudonymise: bool = typer.Option(False, "--pseudonymise", help="Pseudonymise the exports."),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="File holding the key."),
) -> None:
    """Rerun only coordination detection and escalation on a finished run."""
    from . import display, runner

    cfg = _load_config(run_dir / "config.toml" if (run_dir / "config.toml").exists() else None,
                       sets)
    key = _key(pseudonymise, key_file)
    result = runner.escalate_run(run_dir, cfg, pseudonymise_key=key)
    esc = result.escalation
    if key is not None:
        from .privacy import pseudonymise_escalation

        esc = pseudonymise_escalation(esc, key)
    out.print(display.escalations_table(esc.accounts, esc.networks))
    out.print(f"outputs: {run_dir}/ (escalations.csv, escalations.jsonl, networks.csv, "
              "network.graphml)", highlight=False, markup=False)


@app.command("export")
@handle_errors
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder with escalations."),
    fmt: str = typer.Option("csv", "--format", help="csv | jsonl | graphml"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder [RUN_DIR/exports]."),
    pseudonymise: bool = typer.Option(False, "--pseudonymise", help=PSEUDO_HELP),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help=KEY_HELP),
) -> None:
    """Write the escalation list (for human behavioural review) in one format."""
    import json

    from . import export as export_mod
    from .errors import ConfigError

    if fmt not in export_mod.FORMATS:
        raise ConfigError(f"--format {fmt!r} must be one of: {', '.join(export_mod.FORMATS)}")
    key = _key(pseudonymise, key_file)
    manifest = run_dir / "manifest.json"
    if key is not None and manifest.exists() and json.loads(manifest.read_text()).get(
            "pseudonymised_exports"):
        raise ConfigError(f"{run_dir} was run with --pseudonymise: its exports are already "
                          "pseudonymised; export without --pseudonymise")
    esc = export_mod.load(run_dir)
    paths = export_mod.write(esc, out_dir or run_dir / "exports", (fmt,), pseudonymise_key=key)
    out.print("wrote " + ", ".join(str(p) for p in paths), highlight=False, markup=False)


@app.command("narratives")
@handle_errors
def narratives_cmd(run_dir: Path = typer.Argument(..., help="A run folder (runs/<corpus>).")) -> None:
    """Show the narratives of a finished run."""
    import json

    import pandas as pd

    from . import display, runner

    table = runner.read_narratives(run_dir)
    runner.require(run_dir, ["manifest.json"])
    for col in ("first_at", "last_at"):
        table[col] = pd.to_datetime(table[col], utc=True)
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]
    out.print(display.narratives_table(table, counts["noise"], counts["posts"],
                                       f"Narratives in {run_dir}"))


@app.command("coordination")
@handle_errors
def coordination_cmd(
    source: Path = typer.Argument(..., help="coortweet: a CSV/Parquet of object_id, account_id, "
                                            "content_id, timestamp_share. lockstep: a run folder."),
    method: str = typer.Option("lockstep", "--method", help="lockstep | coortweet"),
    time_window: int = typer.Option(60, "--time-window", help="coortweet: seconds."),
    min_participation: int = typer.Option(2, "--min-participation", help="coortweet."),
    edge_weight: float = typer.Option(0.5, "--edge-weight", help="coortweet: weight quantile."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="lockstep: section.key=value."),
) -> None:
    """Detect coordination: Lockstep's method on a run, or CooRTweet's published baseline."""
    from .errors import ConfigError

    if method == "lockstep":
        escalate_cmd(source, sets, False, None)
        return
    if method != "coortweet":
        raise ConfigError(f"--method {method!r} must be lockstep or coortweet")
    from . import coortweet

    shares = coortweet.read_objects(source)
    result = coortweet.run(shares, time_window=time_window, min_participation=min_participation,
                           edge_weight=edge_weight)
    target = out_dir or Path("runs") / f"{source.stem}-coortweet"
    paths = coortweet.write(result, target)
    st = result.stats
    out.print(f"coortweet: {st['n_shares']:,} shares of {st['n_objects']:,} objects -> "
              f"{st['n_pairs']:,} co-share pairs, {st['n_edges']:,} edges "
              f"({st['n_edges_above_threshold']:,} above the {edge_weight} weight quantile), "
              f"{st['n_accounts']:,} accounts in {st['seconds']} s", highlight=False)
    out.print("wrote " + ", ".join(str(p) for p in paths), highlight=False, markup=False)


@app.command("report")
@handle_errors
def report_cmd(run_dir: Path = typer.Argument(..., help="A finished run folder.")) -> None:
    """Build RUN_DIR/report.html: one self-contained page that works offline."""
    from . import report

    path = report.write(run_dir)
    out.print(f"wrote {path}", highlight=False, markup=False)


@app.command("simulate")
@handle_errors
def simulate_cmd(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the corpus to."),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed gives the same corpus."),
    n_posts: int = typer.Option(3000, "--n-posts", help="Approximate number of posts."),
    n_accounts: int = typer.Option(160, "--n-accounts", help="Accounts outside the networks."),
    n_networks: int = typer.Option(1, "--n-networks", help="Planted coordinated networks."),
    network_size: int = typer.Option(14, "--network-size", help="Accounts per network."),
    spread_seconds: int = typer.Option(300, "--spread-seconds", help="Campaign time spread."),
    text_mode: str = typer.Option("mixed", "--text-mode",
                                  help="verbatim | edited | paraphrase | mixed"),
    days: int = typer.Option(30, "--days", help="Days the corpus spans."),
) -> None:
    """Write a simulated corpus with a planted coordinated network (posts, accounts, truth)."""
    from . import simulate
    from .errors import ConfigError

    if text_mode not in ("verbatim", "edited", "paraphrase", "mixed"):
        raise ConfigError(f"--text-mode {text_mode!r} must be verbatim, edited, paraphrase or mixed")
    cfg = simulate.SimConfig(seed=seed, n_posts=n_posts, n_accounts=n_accounts,
                             n_networks=n_networks, network_size=network_size,
                             spread_seconds=spread_seconds, text_mode=text_mode, days=days)
    corpus = simulate.simulate(cfg)
    paths = simulate.write_corpus(corpus, out_dir)
    out.print(f"simulated {len(corpus.posts):,} posts by "
              f"{corpus.posts['account_id'].nunique():,} accounts -> "
              + ", ".join(str(p) for p in paths), highlight=False, markup=False)


if __name__ == "__main__":  # pragma: no cover
    entry()
