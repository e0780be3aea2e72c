"""RUN_DIR/report.html: one self-contained file an analyst can open offline and share.

No CDN, no network, no external file. Every piece of post text and every account name is
HTML-escaped where it is written; the map's data travels as JSON inside a non-executable script
element with '<', '>' and '&' escaped, and is drawn with DOM text APIs, never innerHTML. A
Content-Security-Policy allows only the report's own script (by hash), so even an escaping
mistake could not run anything a post smuggled in."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_open

MAX_MAP_POINTS = 6_000
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
           "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
NOISE_COLOUR = "#c8c8c8"


def e(value: object) -> str:
    """Escape for HTML text and attribute values."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def colour(narrative_id: int) -> str:
    return NOISE_COLOUR if narrative_id < 0 else PALETTE[narrative_id % len(PALETTE)]


def _json_for_script(obj) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _timeline_svg(days: pd.Series, start: pd.Timestamp, end: pd.Timestamp, fill: str) -> str:
    """Posts per day as a small bar chart (inline SVG, no script)."""
    index = pd.date_range(start.normalize(), end.normalize(), freq="D", tz="UTC")
    counts = days.value_counts().reindex(index, fill_value=0)
    width, height = 360, 48
    n = max(len(counts), 1)
    peak = max(int(counts.max()), 1)
    bar = width / n
    rects = []
    for i, (day, c) in enumerate(counts.items()):
        h = 0 if c == 0 else max(1.0, (height - 2) * c / peak)
        rects.append(f'<rect x="{i * bar:.2f}" y="{height - h:.2f}" width="{max(bar - 0.5, 0.5):.2f}" '
                     f'height="{h:.2f}" fill="{fill}"><title>{e(day.strftime("%Y-%m-%d"))}: '
                     f'{int(c)} posts</title></rect>')
    return (f'<svg class="timeline" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="posts per day">{"".join(rects)}</svg>')


SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("map-data").textContent);
  var svg = document.getElementById("map");
  var tip = document.getElementById("map-tip");
  var NS = "http://www.w3.org/2000/svg";
  var W = 900, H = 560, pad = 12;
  var xs = data.points.map(function (p) { return p[0]; });
  var ys = data.points.map(function (p) { return p[1]; });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
  var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  function sx(v) { return pad + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * (W - 2 * pad); }
  function sy(v) { return pad + (y1 > y0 ? (y1 - v) / (y1 - y0) : 0.5) * (H - 2 * pad); }
  var groups = {};
  data.points.forEach(function (p, i) {
    var c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", sx(p[0]).toFixed(1));
    c.setAttribute("cy", sy(p[1]).toFixed(1));
    c.setAttribute("r", "2.6");
    c.setAttribute("fill", data.colours[String(p[2])] || "#999");
    c.setAttribute("data-narrative", String(p[2]));
    c.addEventListener("mouseenter", function () {
      tip.textContent = "narrative " + p[2] + " - " + data.texts[i];
    });
    svg.appendChild(c);
    (groups[p[2]] = groups[p[2]] || []).push(c);
  });
  document.querySelectorAll("input.toggle").forEach(function (box) {
    box.addEventListener("change", function () {
      (groups[box.value] || []).forEach(function (c) {
        c.style.display = box.checked ? "" : "none";
      });
    });
  });
  svg.setAttribute("data-rendered", String(data.points.length));
})();
"""

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Nastaliq Urdu",
"Noto Sans Devanagari",sans-serif;margin:0 auto;max-width:1200px;padding:1rem 1.5rem;color:#222}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.5rem .8rem}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{border-bottom:1px solid #e4e4e4;padding:.3rem .4rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:50%;margin-right:.3rem;
vertical-align:middle}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.4rem}#map{border:1px solid #ddd;background:#fcfcfc}
#map-tip{min-height:2.6em;font-size:.9rem;color:#333;unicode-bidi:plaintext}
.legend label{margin-right:.8rem;white-space:nowrap;font-size:.85rem}
.example{unicode-bidi:plaintext;max-width:40rem}.narrative{margin-bottom:1.4rem}
"""


def _read(run_dir: Path):
    from .runner import read_narratives, require

    require(run_dir, ["manifest.json", "posts.parquet", "assignments.parquet", "narratives.csv"])
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    # the texts are read later, only for the posts the map shows (a corpus may hold millions)
    posts = pd.read_parquet(run_dir / "posts.parquet", columns=["post_id", "created_at"])
    assign = pd.read_parquet(run_dir / "assignments.parquet")
    table = read_narratives(run_dir)
    details = {}
    if (run_dir / "narratives.json").exists():
        for d in json.loads((run_dir / "narratives.json").read_text(encoding="utf-8"))["narratives"]:
            details[int(d["narrative_id"])] = d
    points = pd.read_parquet(run_dir / "map.parquet") if (run_dir / "map.parquet").exists() \
        else None
    esc = None
    if (run_dir / "escalations.jsonl").exists():
        from .export import load

        esc = load(run_dir)
    return manifest, posts, assign, table, details, points, esc


def _texts_of(run_dir: Path, all_ids: pd.Series, wanted: pd.Series) -> dict:
    """post_id -> text for the ``wanted`` posts only, taken from posts.parquet's text column
    as Arrow (no Python string per post of the corpus)."""
    import pyarrow.parquet as pq

    pos = pd.Index(all_ids).get_indexer(pd.Index(wanted).unique())
    pos = pos[pos >= 0]
    texts = pq.read_table(run_dir / "posts.parquet", columns=["text"]).column("text").take(pos)
    return dict(zip(all_ids.to_numpy()[pos], texts.to_pylist()))


def build(run_dir: Path, seed: int = 0) -> str:
    run_dir = Path(run_dir)
    manifest, posts, assign, table, details, points, esc = _read(run_dir)
    counts = manifest.get("counts", {})
    nid = assign["narrative_id"].to_numpy()
    created = posts["created_at"]
    parts = [f"<h1>Lockstep report: {e(Path(manifest.get('corpus', '')).name)}</h1>",
             f"<p>Corpus <code>{e(manifest.get('corpus'))}</code>, input hash "
             f"<code>{e(str(manifest.get('input_hash', ''))[:16])}</code>, Lockstep "
             f"{e(manifest.get('lockstep_version'))}. Posts span {e(created.min().date())} to "
             f"{e(created.max().date())}.</p>"]

    # -- overview
    cards = [("posts", counts.get("posts")), ("rows rejected", counts.get("rejected")),
             ("accounts", counts.get("accounts")), ("narratives", counts.get("narratives")),
             ("noise posts", counts.get("noise")),
             ("escalated accounts", counts.get("escalated_accounts", 0)),
             ("networks", counts.get("networks", 0))]
    parts.append('<section id="overview"><h2>Overview</h2><div class="cards">' + "".join(
        f'<div class="card"><b>{e(f"{v:,}" if isinstance(v, int) else v)}</b>{e(k)}</div>'
        for k, v in cards) + "</div></section>")

    # -- narratives table
    rows = []
    named = "codebook_name" in table.columns
    for r in table.itertuples(index=False):
        rows.append(
            f'<tr><td class="num"><span class="swatch" style="background:{colour(int(r.narrative_id))}">'
            f'</span>{int(r.narrative_id)}</td><td>{e(r.label)}</td>'
            + (f'<td>{e(r.codebook_name)} ({float(r.codebook_similarity):.2f})</td>'
               if named else "") +
            f'<td class="num">{int(r.n_posts):,}</td><td class="num">{int(r.n_accounts):,}</td>'
            f'<td>{e(r.account_types)}</td><td>{e(str(r.first_at)[:10])}</td>'
            f'<td>{e(str(r.last_at)[:10])}</td><td>{e(r.top_terms)}</td>'
            f'<td class="example">{e(r.example_text)}</td></tr>')
    parts.append('<section id="narratives"><h2>Narratives</h2><table><thead><tr><th>id</th>'
                 '<th>label</th>' + ('<th>codebook (cosine)</th>' if named else '')
                 + '<th>posts</th><th>accounts</th><th>account types</th>'
                 '<th>first</th><th>last</th><th>top terms</th><th>example</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table><p>Noise (narrative -1): '
                 f'{int((nid < 0).sum()):,} posts.</p></section>')

    # -- map
    map_html = '<section id="map-section"><h2>Map of posts</h2>'
    if points is not None and len(points):
        pts = points.merge(assign[["post_id", "narrative_id"]], on="post_id")
        if len(pts) > MAX_MAP_POINTS:
            pts = pts.sample(MAX_MAP_POINTS, random_state=seed).sort_index()
        text_of = _texts_of(run_dir, posts["post_id"], pts["post_id"])
        data = {"points": [[round(float(x), 4), round(float(y), 4), int(n)]
                           for x, y, n in zip(pts["x"], pts["y"], pts["narrative_id"])],
                "texts": [str(text_of.get(p, ""))[:280] for p in pts["post_id"]],
                "colours": {str(n): colour(int(n)) for n in sorted(set(pts["narrative_id"]))}}
        legend = "".join(
            f'<label><input type="checkbox" class="toggle" value="{int(n)}" checked> '
            f'<span class="swatch" style="background:{colour(int(n))}"></span>'
            f'{int(n)} {e(dict(zip(table["narrative_id"], table["label"])).get(n, "noise"))}</label>'
            for n in sorted(set(pts["narrative_id"])))
        map_html += (f'<p>Each dot is a post ({len(pts):,} shown), placed by meaning and coloured by '
                     'narrative. Hover a dot to read it; untick a narrative to hide it.</p>'
                     f'<div class="legend">{legend}</div>'
                     '<svg id="map" viewBox="0 0 900 560" width="900" height="560" role="img" '
                     'aria-label="map of posts by narrative"></svg><div id="map-tip"></div>'
                     f'<script type="application/json" id="map-data">{_json_for_script(data)}'
                     '</script>')
    else:
        map_html += "<p>This run has no map coordinates (map.parquet); rerun lockstep cluster.</p>"
    parts.append(map_html + "</section>")

    # -- timelines
    day = created.dt.floor("D")
    start, end = created.min(), created.max()
    blocks = []
    for r in table.itertuples(index=False):
        n = int(r.narrative_id)
        sel = nid == n
        d = details.get(n, {})
        examples = "".join(f"<li class=\"example\">{e(x.get('text'))} <small>({e(x.get('account_id'))}, "
                           f"{e(str(x.get('created_at'))[:16])})</small></li>"
                           for x in d.get("examples", []))
        top = ", ".join(f"{e(a['account_id'])} ({int(a['n_posts'])})"
                        for a in d.get("top_accounts", []))
        def counted(key: str, prefix: str = "") -> str:
            return ", ".join(f"{e(prefix)}{e(i['value'])} ({int(i['n'])})"
                             for i in d.get(key, [])) or "none"

        source = f" (from the {e(d['language_source'])})" if d.get("language_source") else ""
        by_language = "".join(f"<br>Top terms in {e(x['lang'])} ({int(x['n_posts'])} posts): "
                              f"<bdi>{e(', '.join(x['top_terms']))}</bdi>"
                              for x in d.get("top_terms_by_language", []))
        entities = ", ".join(f"{e(x['text'])} <small>{e(x['type'])}</small> ({int(x['n'])})"
                             for x in d.get("entities", [])) or "none found"
        blocks.append(f'<div class="narrative" id="narrative-{n}"><h3><span class="swatch" '
                      f'style="background:{colour(n)}"></span>{n}: {e(r.label)}</h3>'
                      f'{_timeline_svg(day[sel], start, end, colour(n))}'
                      f'<p>Top accounts: {top}<br>Hashtags: {counted("top_hashtags", "#")}<br>'
                      f'Link domains: {counted("top_domains")}<br>'
                      f'Languages: {counted("languages")}{source}{by_language}<br>Named entities (posts naming them): {entities}</p>'
                      f'<ul>{examples}</ul></div>')
    parts.append('<section id="timelines"><h2>Narrative timelines</h2><p>Posts per day, '
                 'same scale of days for every narrative.</p>' + "".join(blocks) + "</section>")

    # -- escalations
    if esc is not None:
        from .escalate import REVIEW_NOTE

        acc_rows = "".join(
            f"<tr><td class=\"num\">{int(a.rank)}</td><td>{e(a.account_id)}</td>"
            f"<td>{e(a.account_name)}</td><td>{e(a.account_type)}</td><td>{e(a.network_id)}</td>"
            f"<td class=\"num\">{float(a.score):.2f}</td><td>{e(str(a.reasons).replace(';', ' '))}"
            f"</td><td class=\"num\">{int(a.n_sync_events)}</td><td>{e(a.narratives)}</td></tr>"
            for a in esc.accounts.itertuples(index=False))
        net_rows = "".join(
            f"<tr><td>{e(r.network_id)}</td><td class=\"num\">{e(r.n_accounts)}</td>"
            f"<td>{e(r.n_pages)} / {e(r.n_groups)} / {e(r.n_profiles)} / {e(r.n_instagram)}</td>"
            f"<td>{e(r.narratives)}</td><td>{e(r.reasons)}</td><td>{e(str(r.first_sync_at)[:10])}"
            f" to {e(str(r.last_sync_at)[:10])}</td><td class=\"num\">{e(r.score)}</td></tr>"
            for r in esc.networks.itertuples(index=False))
        parts.append(
            f'<section id="escalations"><h2>Escalations</h2><p class="note">{e(REVIEW_NOTE)}</p>'
            '<h3>Networks</h3><table><thead><tr><th>network</th><th>accounts</th>'
            '<th>pages / groups / profiles / instagram</th><th>narratives</th><th>reasons</th>'
            '<th>active</th><th>score</th></tr></thead>'
            f'<tbody>{net_rows}</tbody></table><h3>Accounts</h3><table><thead><tr><th>rank</th>'
            '<th>account</th><th>name</th><th>type</th><th>network</th><th>score</th>'
            '<th>reasons</th><th>sync posts</th><th>narratives</th></tr></thead>'
            f'<tbody>{acc_rows}</tbody></table><p>Evidence (synchronised post pairs) for each '
            'account is in escalations.csv / escalations.jsonl.</p></section>')

    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Lockstep report: {e(Path(manifest.get('corpus', '')).name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}"
            f"<script>{SCRIPT}</script></body></html>\n")


def write(run_dir: Path, seed: int = 0) -> Path:
    path = Path(run_dir) / "report.html"
    text = build(run_dir, seed)
    with atomic_open(path) as fh:
        fh.write(text)
    return path
