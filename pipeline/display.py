"""Terminal rendering. Post text is written by the actors under investigation: it is shown as
plain text (never as rich markup) with control and escape sequences removed."""

from __future__ import annotations

import pandas as pd
import regex
from rich.console import Console
from rich.table import Table
from rich.text import Text

# C0/C1 controls (ESC included, so no terminal escape sequence survives), bidi overrides and
# other format characters; newlines and tabs become spaces.
_UNSAFE = regex.compile(r"[\p{Cc}\p{Cf}]")


def safe(text: object, width: int | None = None) -> str:
    s = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text)
    s = _UNSAFE.sub(" ", s)
    s = regex.sub(r"\s+", " ", s).strip()
    if width is not None and len(s) > width:
        s = s[: width - 1] + "…"
    return s


def _day(ts) -> str:
    return "" if pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d")


_TYPE_ABBREV = {"page": "pg", "group": "gr", "profile": "pr", "instagram": "ig"}


def _types(mix: object) -> str:
    """'group:7 instagram:16 page:59' -> 'pg 59 pr 0 gr 7 ig 16' style, most common first."""
    parts = []
    for item in safe(mix).split():
        name, _, n = item.rpartition(":")
        if n.isdigit():
            parts.append((int(n), _TYPE_ABBREV.get(name, name[:3])))
    return " ".join(f"{abbr} {n}" for n, abbr in sorted(parts, key=lambda x: (-x[0], x[1])))


def _one_line(t: Table, header: str, **kw) -> None:
    t.add_column(header, no_wrap=True, overflow="ellipsis", **kw)


def narratives_table(table: pd.DataFrame, n_noise: int, n_posts: int, title: str) -> Table:
    t = Table(title=title, title_justify="left", expand=True, pad_edge=False)
    _one_line(t, "id", justify="right", style="bold", min_width=2)
    _one_line(t, "label", ratio=3, min_width=16)
    named = "codebook_name" in table.columns
    if named:
        _one_line(t, "codebook (cos)", ratio=2, min_width=14)
    _one_line(t, "posts", justify="right", min_width=5)
    _one_line(t, "accts", justify="right", min_width=5)
    _one_line(t, "account types", ratio=2, min_width=12)
    _one_line(t, "first", min_width=10)
    _one_line(t, "last", min_width=10)
    _one_line(t, "example", ratio=4, min_width=12)
    for row in table.itertuples(index=False):
        book = ([Text(f"{safe(row.codebook_name, 60)} ({float(row.codebook_similarity):.2f})")]
                if named else [])
        t.add_row(
            str(row.narrative_id), Text(safe(row.label, 80)), *book, f"{row.n_posts:,}",
            f"{row.n_accounts:,}", Text(_types(getattr(row, "account_types", ""))),
            _day(row.first_at), _day(row.last_at), Text(safe(row.example_text, 160)),
        )
    share = (n_noise / n_posts * 100) if n_posts else 0.0
    t.caption = (f"{len(table)} narratives; noise (narrative -1): {n_noise:,} posts ({share:.0f}%)."
                 " Full detail: narratives.csv / narratives.json")
    t.caption_justify = "left"
    return t


def print_counts(console: Console, stats: dict, rejects_path=None) -> None:
    where = f" (reasons in {rejects_path})" if rejects_path and stats["n_rejected"] else ""
    console.print(
        f"ingest: {stats['n_rows_in']:,} rows in = {stats['n_accepted']:,} accepted "
        f"+ {stats['n_rejected']:,} rejected{where}", highlight=False, markup=False,
    )


def escalations_table(accounts: pd.DataFrame, networks: pd.DataFrame, limit: int = 15) -> Table:
    t = Table(title="Escalated for human behavioural review (not a finding)",
              title_justify="left", expand=True, pad_edge=False)
    _one_line(t, "rank", justify="right", min_width=4)
    _one_line(t, "account", min_width=8)
    _one_line(t, "name", ratio=2, min_width=10)
    _one_line(t, "type", min_width=7)
    _one_line(t, "net", min_width=3)
    _one_line(t, "score", justify="right", min_width=5)
    _one_line(t, "sync", justify="right", min_width=4)
    _one_line(t, "partners", justify="right", min_width=4)
    _one_line(t, "reasons", ratio=3, min_width=14)
    for row in accounts.head(limit).itertuples(index=False):
        t.add_row(str(row.rank), Text(safe(row.account_id, 40)), Text(safe(row.account_name, 60)),
                  Text(safe(row.account_type, 12)), str(row.network_id), f"{float(row.score):.2f}",
                  str(row.n_sync_events), str(row.n_partners),
                  Text(safe(str(row.reasons).replace(";", " "), 120)))
    more = f"; {len(accounts) - limit} more" if len(accounts) > limit else ""
    n_net = len(networks)
    t.caption = (f"{len(accounts)} accounts in {n_net} network{'' if n_net == 1 else 's'}{more}. "
                 "Evidence and partners: escalations.csv / .jsonl; networks: networks.csv, "
                 "network.graphml")
    t.caption_justify = "left"
    return t


_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    peak = max(counts) if counts else 0
    if peak == 0:
        return ""
    return "".join(" " if c == 0 else _SPARK[min(7, int(c / peak * 7.999))] for c in counts)


def _counted(items: list[dict] | None, prefix: str = "") -> str:
    return ", ".join(f"{prefix}{i['value']} ({i['n']})" for i in items or [])


def entities_text(entities: list[dict] | None) -> str:
    """'Imran Khan (PERSON) 12, PTI (ORG) 9': entities with the number of posts naming them."""
    return ", ".join(f"{x['text']} ({x['type']}) {x['n']}" for x in entities or []) or "none found"


def languages_text(detail: dict) -> str:
    """The language mix with where it came from (lang column or script)."""
    mix = _counted(detail.get("languages"))
    if not mix:
        return "no lang column in the corpus"
    source = detail.get("language_source")
    return f"{mix}; from the {source}" if source else mix


def narrative_panel(row: dict, detail: dict, per_day: list[int], first_day: str) -> list:
    """Renderables for one narrative in full."""
    from rich.panel import Panel

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    book = ((("codebook", f"{row['codebook_name']} (cosine {float(row['codebook_similarity']):.2f})"),)
            if row.get("codebook_name") else ())
    for k, v in (("label", row.get("label")), *book, ("posts", f"{int(row['n_posts']):,}"),
                 ("accounts", f"{int(row['n_accounts']):,}"),
                 ("account types", _types(row.get("account_types"))),
                 ("first / last", f"{row.get('first_at')}  /  {row.get('last_at')}"),
                 ("top terms", str(row.get("top_terms", "")).replace(";", ",")),
                 ("hashtags", _counted(detail.get("top_hashtags"), "#")),
                 ("link domains", _counted(detail.get("top_domains"))),
                 ("entities", entities_text(detail.get("entities"))),
                 ("languages", languages_text(detail)),
                 *((f"  terms in {x['lang']}", ", ".join(x["top_terms"]))
                   for x in detail.get("top_terms_by_language", [])),
                 ("posts per day", detail.get("posts_per_day", "")),
                 (f"posts per day from {first_day}", sparkline(per_day))):
        head.add_row(k, Text(safe(v)))
    ex = Table(title="Representative posts (nearest the centre, no two alike)",
               title_justify="left", expand=True)
    _one_line(ex, "post", min_width=8)
    _one_line(ex, "account", min_width=8)
    _one_line(ex, "when", min_width=16)
    ex.add_column("text", ratio=1)
    for x in detail.get("examples", []):
        ex.add_row(Text(safe(x.get("post_id"))), Text(safe(x.get("account_id"))),
                   Text(safe(str(x.get("created_at"))[:16])), Text(safe(x.get("text"), 600)))
    acc = Table(title="Top accounts", title_justify="left")
    acc.add_column("account")
    acc.add_column("posts", justify="right")
    for a in detail.get("top_accounts", []):
        acc.add_row(Text(safe(a.get("account_id"))), str(a.get("n_posts")))
    return [Panel(head, title=f"narrative {row['narrative_id']}", title_align="left"), ex, acc]


def print_refine(console: Console, cluster_stage: dict) -> None:
    """Merges and noise moved by the refine step (pipeline.refine), when there were any."""
    for m in cluster_stage.get("merges") or []:
        steps = ", ".join(f"{x['merged']} into {x['into']} (cos {x['similarity']:.3f})"
                          for x in m["steps"])
        console.print(f"merged: clusters {', '.join(map(str, m['cluster_ids']))} are narrative "
                      f"{m['narrative_id']} ({steps})", highlight=False, markup=False)
    n = cluster_stage.get("n_reassigned_noise")
    if n:
        console.print(f"noise: {n:,} posts moved into their nearest narrative "
                      "(refine.reassign_noise)", highlight=False, markup=False)


def assign_table(counts: pd.DataFrame, n_unassigned: int, n_posts: int, title: str) -> Table:
    t = Table(title=title, title_justify="left", expand=True, pad_edge=False)
    _one_line(t, "id", justify="right", style="bold", min_width=2)
    _one_line(t, "label", ratio=3, min_width=16)
    _one_line(t, "codebook", ratio=2, min_width=10)
    _one_line(t, "posts", justify="right", min_width=5)
    _one_line(t, "share", justify="right", min_width=5)
    _one_line(t, "in training", justify="right", min_width=6)
    for row in counts.itertuples(index=False):
        t.add_row(str(row.narrative_id), Text(safe(row.label, 80)),
                  Text(safe(row.codebook_name, 60)), f"{row.n_posts:,}",
                  f"{row.n_posts / n_posts:.0%}" if n_posts else "", f"{row.n_posts_in_training:,}")
    share = n_unassigned / n_posts if n_posts else 0.0
    t.add_row("-1", Text("fits no narrative (see emerging candidates)"), Text(""),
              f"{n_unassigned:,}", f"{share:.0%}", "")
    t.caption = "Full detail: assignments.parquet, summary.csv / summary.json"
    t.caption_justify = "left"
    return t


def emerging_table(groups: pd.DataFrame) -> Table:
    t = Table(title="Candidate emerging narratives (unassigned posts grouped among themselves)",
              title_justify="left", expand=True, pad_edge=False)
    _one_line(t, "group", justify="right", min_width=5)
    _one_line(t, "posts", justify="right", min_width=5)
    _one_line(t, "accts", justify="right", min_width=5)
    _one_line(t, "top terms", ratio=3, min_width=16)
    _one_line(t, "example", ratio=4, min_width=12)
    for row in groups.itertuples(index=False):
        t.add_row(str(row.group_id), f"{row.n_posts:,}", f"{row.n_accounts:,}",
                  Text(safe(str(row.top_terms).replace(";", ","), 120)),
                  Text(safe(row.example_text, 160)))
    t.caption = (f"{len(groups)} candidate groups, for an analyst to read. Full detail: "
                 "emerging.csv / emerging.json")
    t.caption_justify = "left"
    return t
