"""Deterministic synthetic corpus: organic posters, news bursts, fans and planted networks.

The corpus looks like a platform export in which coordinated networks hide among ordinary
accounts (the motivating case: 103 pages, groups and accounts run by a military media wing,
posing as military fan, Kashmir community, hobby and news pages). Who posts:

- organic accounts post about their 1-3 narrative interests at random times with a daily rhythm;
- hyperactive news pages post many times more (political news and follow-ups of breaking news);
- breaking-news bursts: 25-60 organic accounts each post once about one story within 1-2 hours,
  with varied wording and often the same news link; an account joins only a few bursts;
- fans repost one famous slogan or quote word for word, days apart, independently;
- coordinated networks run campaigns: 50-90% of the members post one narrative within
  ``spread_seconds``, as verbatim copies, edited copies or paraphrases (``text_mode``), often with
  the same link and hashtags, some as reshares; between campaigns they post a little on their own.

Campaigns scale with posts per account, bursts with ``n_posts`` (capped so an account joins about
three at most), hyperactive pages and fans with ``n_accounts``. Everything random comes from one
``numpy.random.Generator(seed)`` and generators derived from it: same config, byte-identical files.
Vocabulary lives in ``pipeline.simdata``; ``truth.json`` records what was planted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import simdata
from .atomic import write_csv, write_json
from .errors import ConfigError
from .schema import ACCOUNT_COLUMNS

POST_COLUMNS = ("post_id", "account_id", "created_at", "text", "url", "account_name",
                "account_type", "platform", "lang", "reshare_of", "hashtags")
TEXT_MODES = ("verbatim", "edited", "paraphrase", "mixed")
ROLES = ("organic", "hyperactive", "fan", "coordinated")
ORGANIC, HYPER, FAN, COORD = range(4)
ACCOUNT_TYPES = ("page", "group", "profile", "instagram")
PAGE, GROUP, PROFILE, INSTAGRAM = range(4)
ORGANIC_TYPE_P = (0.30, 0.12, 0.38, 0.20)
NETWORK_TYPE_P = (24 / 103, 7 / 103, 57 / 103, 15 / 103)  # the motivating takedown's mix
KIND_OWN, KIND_HYPER, KIND_CAMPAIGN, KIND_BURST, KIND_QUOTE = range(5)  # only own posts reshare
PROPAGANDA = ("military_fan", "air_force", "kashmir_solidarity", "kashmir_life", "political_news")
COVER = ("pakistan_culture", "cricket", "photography", "cars", "political_news")
PLAN = ("acct", "t", "topic", "event", "kind", "reshare", "lang", "story")
DAY = 86_400
REF_POSTS_PER_ACCOUNT = 3000 / 174  # posts per account at the defaults; activity scales from it
K_EN = (1, 1, 1, 2, 2, 2, 2, 2, 3, 3)  # sentences per post, by language
K_OTHER = (1, 1, 1, 1, 2, 2, 2, 2, 2, 2)
LANG_P = (0.5, 0.3, 0.2)  # Roman Urdu, Urdu script, Hindi within the multilingual share
URL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
HOURLY_UTC = np.roll(np.array(simdata.HOURLY_PKT), -5)
HOURLY_UTC = HOURLY_UTC / HOURLY_UTC.sum()


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7
    n_posts: int = 3000  # approximate total posts (within ±10%)
    n_accounts: int = 160  # organic + special accounts, excluding the coordinated networks
    n_networks: int = 1  # planted coordinated networks
    network_size: int = 14  # accounts per network
    spread_seconds: int = 300  # a campaign's posts fall within this many seconds of its start
    text_mode: str = "mixed"  # verbatim | edited | paraphrase | mixed
    days: int = 30  # the corpus spans this many days
    start: str = "2024-03-01T00:00:00Z"
    multilingual: float = 0.15  # share of posts in Roman Urdu / Urdu script / Hindi script


@dataclass
class Corpus:
    posts: pd.DataFrame
    accounts: pd.DataFrame
    truth: dict


def simulate(cfg: SimConfig = SimConfig()) -> Corpus:
    """Build the corpus that ``cfg`` describes. Same config, same corpus, bit for bit."""
    start = _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    st = _Stream(np.random.default_rng(rng.integers(2**63)))
    topics = _topics()
    acc, nets = _accounts(cfg, topics, rng, st)
    activity = cfg.n_posts / len(acc["id"]) / REF_POSTS_PER_ACCOUNT
    events: list[str] = []  # campaign and burst ids; posts refer to them by index
    parts = [_campaigns(cfg, acc, nets, topics, activity, events, rng, st)]
    burst_part, bursts = _bursts(cfg, acc, topics, events, rng, st)
    parts += [burst_part, _fan_quotes(cfg, acc, topics, activity, rng)]
    n_left = max(0, cfg.n_posts - sum(len(p["t"]) for p in parts))
    parts.append(_own_posts(cfg, acc, bursts, n_left, rng))
    posts, labels = _assemble(start, acc, nets, topics, events, bursts, parts, rng, st)
    accounts = pd.DataFrame({
        "account_id": acc["id"], "created_at": _iso(start, acc["created"]), "name": acc["name"],
        "followers": acc["followers"], "admin_countries": acc["admin"],
        "name_changes": acc["name_changes"]}, columns=list(ACCOUNT_COLUMNS))
    ids, network = acc["id"], acc["network"].tolist()
    truth = {
        "generator": "lockstep.simulate",
        "config": dataclasses.asdict(cfg),
        "narratives": [t["name"] for t in topics],
        "networks": [{"network_id": n["network_id"], "accounts": [ids[i] for i in n["members"]],
                      "narratives": [topics[k]["name"] for k in n["topics"]],
                      "n_campaigns": n["n_campaigns"]} for n in nets],
        "accounts": {ids[i]: {"role": ROLES[role],
                              "network_id": nets[network[i]]["network_id"] if network[i] >= 0
                              else None, "bursts": acc["bursts"][i]}
                     for i, role in enumerate(acc["role_list"])},
        "bursts": [{"burst_id": b["burst_id"], "story": topics[b["topic"]]["name"],
                    "at": str(_iso(start, [b["at"]])[0]),
                    "accounts": [ids[i] for i in b["accounts"]]} for b in bursts],
        "posts": labels,
    }
    return Corpus(posts=posts, accounts=accounts, truth=truth)


def write_corpus(corpus: Corpus, out_dir: Path) -> list[Path]:
    """Write posts.csv, accounts.csv and truth.json atomically into ``out_dir``."""
    out = Path(out_dir)
    paths = [out / "posts.csv", out / "accounts.csv", out / "truth.json"]
    write_csv(corpus.posts, paths[0], neutralise=False)  # a raw corpus, not an export
    write_csv(corpus.accounts, paths[1], neutralise=False)
    write_json(corpus.truth, paths[2])
    return paths


# -- checks and small helpers ----------------------------------------------------------------

def _check(cfg: SimConfig) -> np.datetime64:
    checks = [
        (cfg.text_mode in TEXT_MODES,
         f"text_mode ({cfg.text_mode!r}) must be one of: {', '.join(TEXT_MODES)}"),
        (cfg.seed >= 0, f"seed ({cfg.seed}) must be >= 0"),
        (cfg.n_posts >= 100, f"n_posts ({cfg.n_posts}) must be at least 100"),
        (cfg.n_accounts >= 20, f"n_accounts ({cfg.n_accounts}) must be at least 20"),
        (cfg.n_networks >= 0, f"n_networks ({cfg.n_networks}) must be >= 0"),
        (cfg.network_size >= 2, f"network_size ({cfg.network_size}) must be at least 2"),
        (1 <= cfg.spread_seconds <= 6 * 3600,
         f"spread_seconds ({cfg.spread_seconds}) must be between 1 and 21600"),
        (cfg.days >= 1, f"days ({cfg.days}) must be at least 1"),
        (0.0 <= cfg.multilingual <= 1.0,
         f"multilingual ({cfg.multilingual}) must be between 0 and 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    try:
        return np.datetime64(cfg.start.removesuffix("Z"), "s")
    except ValueError:
        raise ConfigError(f"start ({cfg.start!r}) is not an ISO 8601 UTC time; "
                          "write it like 2024-03-01T00:00:00Z") from None


class _Stream:
    """Random integers from a numpy generator, drawn in blocks and handed out one at a time.

    Writing text takes millions of tiny choices; a Python-level stream is far faster than a
    generator call for each, and stays fully determined by the seed.
    """

    TOP = 2**31

    def __init__(self, rng: np.random.Generator, block: int = 1 << 16):
        self.rng, self.block, self.next = rng, block, iter(()).__next__

    def draw(self) -> int:
        try:
            return self.next()
        except StopIteration:
            self.next = iter(self.rng.integers(0, self.TOP, self.block).tolist()).__next__
            return self.next()

    def below(self, n: int) -> int:
        return self.draw() % n

    def pick(self, seq):
        return seq[self.draw() % len(seq)]

    def chance(self, p: float) -> bool:
        return self.draw() < p * self.TOP


class _Fill:
    """format_map filler: a story's fixed facts first, else a random slot value (no repeats)."""

    __slots__ = ("draw", "pools", "facts", "seen")

    def __init__(self, st: _Stream, pools: dict, facts: dict | None):
        self.draw, self.pools, self.facts, self.seen = st.draw, pools, facts, {}

    def __getitem__(self, key):
        if self.facts and key in self.facts:
            return self.facts[key]
        pool = self.pools[key]
        i = self.draw() % len(pool)
        if self.seen.get(key) == i:
            i = (i + 1) % len(pool)
        self.seen[key] = i
        return pool[i]


@functools.cache
def _topics() -> tuple[dict, ...]:
    """Narratives then stories, each with sentences and slot pools per language."""
    out = []
    for name, spec in [*simdata.NARRATIVES.items(), *simdata.STORIES.items()]:
        slots = spec.get("slots", {})
        en = {**simdata.SHARED["en"], **slots.get("en", {})}
        pools = {"en": en, "ur_roman": {**en, **slots.get("ur_roman", {})},
                 **{lang: {**simdata.SHARED[lang], **slots.get(lang, {})} for lang in ("ur", "hi")}}
        out.append({**spec, "name": name, "pools": pools, "facts": spec.get("facts"),
                    "domains": spec.get("domains", simdata.NEWS_DOMAINS),
                    "slug": spec.get("slug", name.replace("_", "-"))})
    return tuple(out)


def _index(topics, names) -> list[int]:
    where = {t["name"]: i for i, t in enumerate(topics)}
    return [where[name] for name in names]


def _iso(start: np.datetime64, seconds) -> np.ndarray:
    stamps = start + np.asarray(seconds, dtype=np.int64).astype("timedelta64[s]")
    return np.char.add(np.datetime_as_string(stamps, unit="s"), "Z")


def _times(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Seconds after start: a random day, an hour from the daily rhythm, a random second."""
    day = rng.integers(0, days, n, dtype=np.int64)
    hour = rng.choice(24, size=n, p=HOURLY_UTC).astype(np.int64)
    return day * DAY + hour * 3600 + rng.integers(0, 3600, n, dtype=np.int64)


def _lang(st: _Stream, share: float) -> str:
    r = st.draw() / _Stream.TOP
    if r >= share:
        return "en"
    return simdata.LANGS[1 + int(np.searchsorted(np.cumsum(LANG_P), r / share, side="right"))]


def _strings(values) -> pa.Array:
    """Compact UTF-8 column (Python strings cost several times more memory)."""
    return pa.array(values, type=pa.large_string())


def _part(rows: list[tuple]) -> dict:
    """Written rows of (account, t, topic, event, kind, reshare, text, url, tags) -> a part."""
    cols = list(zip(*rows)) if rows else [()] * 9
    part = {k: np.array(cols[j], dtype=np.int64) for j, k in enumerate(PLAN[:6])}
    return {**part, "lang": np.full(len(rows), -1), "story": np.full(len(rows), -1),
            "posts": list(zip(*cols[6:]))}


# -- text ------------------------------------------------------------------------------------

def _body(st: _Stream, topic: dict, lang: str, facts: dict | None = None) -> str:
    """One to three distinct sentences of the topic (8-40 words), sometimes an emoji or sign-off.

    The hottest path of the simulator, so it draws raw integers instead of calling helpers.
    """
    sents, draw = topic["sentences"][lang], st.draw
    fill = _Fill(st, topic["pools"][lang], facts)
    want = (K_EN if lang == "en" else K_OTHER)[draw() % 10]
    used: list[int] = []
    parts: list[str] = []
    n_words = 0
    while len(used) < len(sents) and (len(used) < want or n_words < 8):
        i = draw() % len(sents)
        while i in used:
            i = (i + 1) % len(sents)
        used.append(i)
        part = sents[i].format_map(fill)
        if parts and n_words + part.count(" ") + 1 > 36:
            break
        parts.append(part[0].upper() + part[1:] if part[0].islower() else part)
        n_words += part.count(" ") + 1
    r = draw()
    if r < 0.12 * _Stream.TOP:
        parts.append(simdata.CLOSERS[lang][r % len(simdata.CLOSERS[lang])])
    r = draw()
    if r < 0.3 * _Stream.TOP:
        parts.append(topic["emojis"][r % len(topic["emojis"])] * (1 + (r >> 10) % 2))
    return " ".join(parts)


def _tags(st: _Stream, topic: dict, k: int) -> list[str]:
    """Up to ``k`` distinct hashtags of the topic, in random order."""
    pool, out = topic["hashtags"], []
    while len(out) < min(k, len(pool)):
        tag = pool[st.draw() % len(pool)]
        if tag not in out:
            out.append(tag)
    return out


def _link(st: _Stream, domain: str, slug: str) -> str:
    if domain in ("youtube.com", "instagram.com"):
        x = (st.draw() << 62) | (st.draw() << 31) | st.draw()
        code = "".join(URL_CHARS[(x >> (6 * j)) & 63] for j in range(11))
        return (f"https://www.youtube.com/watch?v={code}" if domain == "youtube.com"
                else f"https://www.instagram.com/p/{code}/")
    return f"https://{domain}/{slug}/{100_000 + st.below(900_000)}"


def _join(body: str, tags: list[str], url: str) -> tuple[str, str, str]:
    """Full post text (body, #tags, link), the url column and the hashtags column."""
    text = " ".join([body, *("#" + t for t in tags), *([url] if url else [])])
    return text, url, " ".join(t.lower() for t in tags)


def _edit(st: _Stream, body: str, emojis: list[str]) -> str:
    """One or two small edits: a word swapped for a synonym, an emoji changed, emphasis added."""
    words = body.split(" ")
    for _ in range(1 + st.below(2)):
        op = st.below(3)
        swaps = [i for i, w in enumerate(words) if w.strip(".,!?").lower() in simdata.SYNONYMS]
        emoji_end = words[-1][:1] != "" and words[-1][0] in "".join(emojis)
        if op == 0 and swaps:
            i = st.pick(swaps)
            core = words[i].strip(".,!?")
            new = simdata.SYNONYMS[core.lower()]
            words[i] = words[i].replace(core, new.capitalize() if core[0].isupper() else new, 1)
        elif op < 2 and emoji_end and len(words) > 1:
            words.pop()  # drop a trailing emoji
        elif op < 2:
            words.append(st.pick(emojis))
        else:
            last = words[-1]
            words[-1] = last[:-1] + "!!" if last.endswith((".", "!", "۔", "।")) else last + "!"
    out = " ".join(words)
    return out if out != body else out + " " + st.pick(emojis)


# -- accounts --------------------------------------------------------------------------------

def _accounts(cfg: SimConfig, topics, rng: np.random.Generator, st: _Stream):
    """Accounts in random id order: roles, types, names, interests and page metadata."""
    n = cfg.n_accounts + cfg.n_networks * cfg.network_size
    scale = cfg.n_accounts / 160
    n_hyper = max(1, round(int(rng.integers(4, 7)) * scale))
    n_fans = max(2, round(int(rng.integers(8, 13)) * scale))
    slots = rng.permutation(n)
    role, network = np.full(n, ORGANIC), np.full(n, -1)
    role[slots[:n_hyper]], role[slots[n_hyper:n_hyper + n_fans]] = HYPER, FAN
    role[slots[cfg.n_accounts:]] = COORD
    network[slots[cfg.n_accounts:]] = np.repeat(np.arange(cfg.n_networks), cfg.network_size)
    hyper = role == HYPER

    kind = np.where(hyper, PAGE, rng.choice(4, size=n, p=ORGANIC_TYPE_P))
    # Interests: one to three distinct narratives drawn by popularity (Gumbel top-k).
    n_nar = len(simdata.NARRATIVES)
    logw = np.log([t["weight"] for t in topics[:n_nar]])
    ranked = np.argsort(-(logw + rng.gumbel(size=(n, n_nar))), axis=1, kind="stable")[:, :3]
    n_int = np.where(hyper, 1, rng.choice([1, 2, 3], size=n, p=[0.35, 0.4, 0.25]))
    ranked[hyper, 0] = _index(topics, ["political_news"])[0]
    quote_topics = _index(topics, [q[1] for q in simdata.QUOTES])
    for i in np.flatnonzero(role == FAN):  # a fan's first interest is its quote's narrative
        ranked[i] = list(dict.fromkeys([st.pick(quote_topics), *ranked[i].tolist()]))[:3]
    interests = np.where(np.arange(3) < n_int[:, None], ranked, -1)

    created = rng.integers(-14 * 365 * DAY, -60 * DAY, n)  # organic: spread over years
    codes, weights = zip(*simdata.COUNTRIES)
    pair = np.argsort(-(np.log(weights) + rng.gumbel(size=(n, len(codes)))), axis=1)[:, :2]
    two = np.isin(kind, (PAGE, GROUP)) & (rng.random(n) < 0.25)
    admin = [codes[a] + (";" + codes[b] if both else "")
             for a, b, both in zip(pair[:, 0].tolist(), pair[:, 1].tolist(), two.tolist())]
    name_changes = rng.poisson(0.15, n)
    followers = np.exp(np.where(hyper, rng.normal(12.5, 0.6, n), rng.normal(
        [9.0, 8.0, 5.5, 7.0], [1.3, 1.2, 1.0, 1.4], (n, 4))[np.arange(n), kind]))
    weight = np.where(hyper, 10 * rng.lognormal(0.0, 0.3, n), rng.lognormal(0.0, 1.0, n))

    nets = []
    cover = _index(topics, COVER)
    for k in range(cfg.n_networks):
        members = np.flatnonzero(network == k)
        picks = (["military_fan", "kashmir_solidarity"] + (["air_force"] * st.below(2))
                 if k == 0  # the motivating case
                 else rng.choice(PROPAGANDA, size=int(rng.integers(2, 4)), replace=False).tolist())
        own = _index(topics, picks)
        nets.append({"network_id": f"n{k + 1}", "members": members, "topics": own,
                     "domains": rng.choice(simdata.CAMPAIGN_DOMAINS, 2 + st.below(2),
                                           replace=False).tolist(), "n_campaigns": 0})
        types = rng.choice(4, size=len(members), p=NETWORK_TYPE_P)
        types[:min(4, len(members))] = [PAGE, GROUP, PROFILE, INSTAGRAM][:len(members)]
        kind[members] = rng.permutation(types)
        for i in members:  # each member poses as a fan, community, hobby or news page
            row = list(dict.fromkeys([st.pick(own if st.chance(0.6) else cover), *own]))[:3]
            interests[i], n_int[i] = row + [-1] * (3 - len(row)), len(row)
        created[members] = rng.integers(-420 * DAY, -90 * DAY) + rng.integers(0, 4 * DAY,
                                                                                len(members))
        shared_admin = "PK" if st.chance(0.7) else "PK;AE"
        for i in members:
            admin[i] = shared_admin
        name_changes[members] = 1 + rng.poisson(2.0, len(members))
        followers[members] = np.exp(rng.normal(8.5, 0.8, len(members)))
        weight[members] = 0.5 * rng.lognormal(0.0, 0.5, len(members))

    used: set[str] = set()
    names = [_name(st, kind[i], topics[interests[i, 0]], hyper[i], used) for i in range(n)]
    return {"id": [f"a{i + 1:0{max(4, len(str(n)))}d}" for i in range(n)], "role": role,
            "network": network, "kind": kind, "name": names, "interests": interests,
            "n_int": n_int, "created": created, "admin": admin, "name_changes": name_changes,
            "followers": followers.astype(np.int64), "weight": weight,
            "bursts": [[] for _ in range(n)], "role_list": role.tolist(),
            "kind_list": kind.tolist(), "network_list": network.tolist(),
            "domain": [simdata.NEWS_DOMAINS[i % len(simdata.NEWS_DOMAINS)] for i in range(n)]}, nets


def _name(st: _Stream, kind: int, topic: dict, hyper: bool, used: set[str]) -> str:
    """A unique display name that fits the account type and its main narrative."""
    person = f"{st.pick(simdata.FIRST_NAMES)} {st.pick(simdata.LAST_NAMES)}"
    core = st.pick(topic["names"]["cores"])
    page = f"{core} {st.pick(topic['names']['suffixes'])}"
    if hyper:
        name = st.pick(simdata.NEWS_PAGE_NAMES)
    elif kind == INSTAGRAM:
        name = st.pick("._").join((person if st.chance(0.5) else page).lower().split())
    else:
        name = {PAGE: page, PROFILE: person}.get(kind, f"{core} {st.pick(simdata.GROUP_SUFFIXES)}")
    base, tries = name, 0
    while name in used:
        tries += 1
        extra = (st.below(100 * tries) if kind == INSTAGRAM else tries if tries > 4
                 else st.pick(simdata.LAST_NAMES if kind == PROFILE else simdata.SHARED["en"]["city"]))
        name = f"{base}{st.pick('._')}{extra}" if kind == INSTAGRAM else f"{base} {extra}"
    used.add(name)
    return name


# -- who posts what --------------------------------------------------------------------------

def _campaigns(cfg, acc, nets, topics, activity, events, rng, st) -> dict:
    """Each network's campaigns: a random 50-90% of members post one narrative in sync."""
    rows: list[tuple] = []
    span = cfg.days * DAY - cfg.spread_seconds - 1
    cap = max(2, cfg.days * DAY // (4 * cfg.spread_seconds))
    for net in nets:
        n_c = net["n_campaigns"] = int(np.clip(round(rng.uniform(26, 38) * activity), 2, cap))
        modes = (["verbatim", "edited", "paraphrase"] * n_c)[:n_c]
        modes = ([modes[i] for i in rng.permutation(n_c)] if cfg.text_mode == "mixed"
                 else [cfg.text_mode] * n_c)
        starts = np.sort(np.minimum(_times(rng, n_c, cfg.days), span))
        members = net["members"]
        lo = max(2, math.ceil(0.5 * len(members)))
        hi = max(lo, math.floor(0.9 * len(members)))
        for c in range(n_c):
            events.append(f"{net['network_id']}-c{c + 1:0{max(2, len(str(n_c)))}d}")
            who = rng.choice(members, size=int(rng.integers(lo, hi + 1)), replace=False)
            at = int(starts[c]) + np.concatenate(
                [[0], np.sort(rng.integers(1, cfg.spread_seconds + 1, len(who) - 1))])
            topic_i = st.pick(net["topics"])
            rows += _campaign_rows(cfg, acc, net, topics[topic_i], topic_i, len(events) - 1,
                                   modes[c], who.tolist(), at.tolist(), len(rows), st)
    return _part(rows)


def _campaign_rows(cfg, acc, net, topic, topic_i, event, mode, who, at, first_row, st) -> list:
    """The first member writes the post; the others copy, edit, paraphrase or reshare it."""
    lang = _lang(st, cfg.multilingual)
    tags = _tags(st, topic, 2 + st.below(3))
    link = (f"https://{st.pick(net['domains'])}/{tags[0].lower()}-{100_000 + st.below(900_000)}"
            if st.chance(0.75) else "")
    body = _body(st, topic, lang)
    first = _join(body, tags, link)
    facebook = [acc["kind_list"][a] != INSTAGRAM for a in who]
    rows = [(who[0], at[0], topic_i, event, KIND_CAMPAIGN, -1, *first)]
    for j in range(1, len(who)):
        reshare = facebook[0] and facebook[j] and st.chance(0.2)
        if reshare or mode == "verbatim":
            post = first
        elif mode == "edited":
            own_tags = tags
            if st.chance(0.35):  # a hashtag dropped or added
                own_tags = tags[:-1] if len(tags) > 2 and st.chance(0.5) else list(
                    dict.fromkeys(tags + _tags(st, topic, 1)))
            post = _join(_edit(st, body, topic["emojis"]), own_tags,
                         link if st.chance(0.9) else "")
        else:
            post = _join(_body(st, topic, lang),
                         tags if st.chance(0.75) else _tags(st, topic, 1 + st.below(3)),
                         link if st.chance(0.8) else "")
        rows.append((who[j], at[j], topic_i, event, KIND_CAMPAIGN,
                     first_row if reshare else -1, *post))
    return rows


def _bursts(cfg, acc, topics, events, rng, st) -> tuple[dict, list[dict]]:
    """Breaking-news bursts: many organic accounts post once about one story within 1-2 hours."""
    organic = np.flatnonzero(acc["role"] == ORGANIC)
    stories = [i for i, t in enumerate(topics) if t["facts"]]
    max_size = max(3, min(int(0.6 * len(organic)), cfg.n_posts // 20))
    n_b = max(1, round(rng.uniform(4, 6) * cfg.n_posts / 3000))
    n_b = min(n_b, max(1, 3 * len(organic) // min(42, max_size)))
    order = rng.permutation(len(stories))
    ats = np.sort(np.minimum(_times(rng, n_b, cfg.days), cfg.days * DAY - 3600))
    joins = np.zeros(len(organic))
    rows: list[tuple] = []
    bursts = []
    for b in range(n_b):
        topic_i = stories[order[b % len(stories)]]
        topic, at = topics[topic_i], int(ats[b])
        size = min(int(rng.integers(25, 61)), max_size)
        p = np.exp(-1.5 * joins)  # accounts that joined a burst are less likely to join again
        picked = rng.choice(len(organic), size=size, replace=False, p=p / p.sum())
        joins[picked] += 1
        times = np.minimum(at + (rng.uniform(3600, 7200) * rng.beta(1.2, 2.5, size)).astype(int),
                           cfg.days * DAY - 1)
        facts = _facts(st, topic)
        link = (f"https://www.{st.pick(simdata.NEWS_DOMAINS)}/news/"
                f"{1_000_000 + st.below(9_000_000)}/{topic['slug']}")
        events.append(f"b{b + 1}")
        for a, t in zip(organic[picked].tolist(), times.tolist()):
            acc["bursts"][a].append(events[-1])
            lang = _lang(st, cfg.multilingual)
            url = ""
            if acc["kind_list"][a] != INSTAGRAM and st.chance(0.8):
                url = link if st.chance(0.85) else _link(st, st.pick(simdata.NEWS_DOMAINS),
                                                         topic["slug"])
            tags = _tags(st, topic, 1 + st.below(2)) if st.chance(0.4) else []
            rows.append((a, t, topic_i, len(events) - 1, KIND_BURST, -1,
                         *_join(_body(st, topic, lang, facts[lang]), tags, url)))
        bursts.append({"burst_id": events[-1], "topic": topic_i, "at": at, "facts": facts,
                       "accounts": organic[picked].tolist()})
    return _part(rows), bursts


def _facts(st: _Stream, topic: dict) -> dict[str, dict[str, str]]:
    """One value per fact of a story, written out in every language."""
    out: dict[str, dict[str, str]] = {lang: {} for lang in simdata.LANGS}
    for key, values in topic["facts"].items():
        by_lang = values if isinstance(values, dict) else {"en": values}
        i = st.below(len(by_lang["en"]))
        for lang in simdata.LANGS:
            out[lang][key] = by_lang.get(lang, by_lang["en"])[i]
    return out


def _fan_quotes(cfg, acc, topics, activity, rng) -> dict:
    """Fans repost one famous quote verbatim, days apart, independently of each other."""
    fans = np.flatnonzero(acc["role"] == FAN)
    allowed = [q for q in simdata.QUOTES if q[2] == "en" or cfg.multilingual > 0]
    n_q = max(1, min(len(allowed), len(fans) // 3))
    chosen = [allowed[i] for i in rng.permutation(len(allowed))[:n_q]]
    rows: list[tuple] = []
    for j, fan in enumerate(fans.tolist()):
        text, narrative, _ = chosen[j % n_q]
        k = int(np.clip(round(rng.uniform(2, 5) * activity), 2, max(2, cfg.days // 2)))
        grid = np.arange(0, cfg.days, 2) if k <= (cfg.days + 1) // 2 else np.arange(cfg.days)
        days = rng.choice(grid, size=min(k, len(grid)), replace=False)
        tags = " ".join(w[1:].lower() for w in text.split() if w.startswith("#"))
        rows += [(fan, t, _index(topics, [narrative])[0], -1, KIND_QUOTE, -1, text, "", tags)
                 for t in (days * DAY + _times(rng, len(days), 1)).tolist()]
    return _part(rows)


def _own_posts(cfg, acc, bursts, n_left, rng) -> dict:
    """Everyone's independent posting, planned here and written later in time order."""
    w = acc["weight"]
    a = np.repeat(np.arange(len(w)), rng.multinomial(n_left, w / w.sum()))
    t = _times(rng, len(a), cfg.days)
    topic = acc["interests"][a, (rng.random(len(a)) * acc["n_int"][a]).astype(np.int64)]
    role = acc["role"][a]
    story = np.full(len(a), -1)
    if bursts:  # hyperactive pages follow up on breaking news after it breaks
        b = rng.integers(0, len(bursts), len(a))
        later = (np.array([x["at"] for x in bursts])[b] + 600
                 + rng.exponential(4 * 3600, len(a)).astype(np.int64))
        follow = (role == HYPER) & (rng.random(len(a)) < 0.3) & (later < cfg.days * DAY)
        story[follow], t[follow] = b[follow], later[follow]
        topic[follow] = np.array([x["topic"] for x in bursts])[b[follow]]
    share = cfg.multilingual
    lang = rng.choice(4, size=len(a), p=[1 - share, *(share * p for p in LANG_P)])
    return {"acct": a, "t": t, "topic": topic, "event": np.full(len(a), -1), "lang": lang,
            "kind": np.where(role == HYPER, KIND_HYPER, KIND_OWN), "reshare": np.full(len(a), -1),
            "story": story, "posts": None}


def _own_text(st, acc, nets, topic, lang, a, facts) -> tuple[str, str, str]:
    """An account's own post: a link now and then (news pages: mostly), hashtags, the body."""
    role, insta = acc["role_list"][a], acc["kind_list"][a] == INSTAGRAM
    url = ""
    if role == HYPER and st.chance(0.75):
        url = _link(st, acc["domain"][a], topic["slug"])
    elif role != HYPER and not insta and st.chance(0.25 if role == COORD else 0.12):
        domains = (nets[acc["network_list"][a]]["domains"] if role == COORD and st.chance(0.4)
                   else topic["domains"])
        url = _link(st, st.pick(domains), topic["slug"])
    k = (2 + st.below(5)) * st.chance(0.9) if insta else (1 + st.below(3)) * st.chance(0.35)
    return _join(_body(st, topic, lang, facts), _tags(st, topic, k) if k else [], url)


# -- assembly --------------------------------------------------------------------------------

def _assemble(start, acc, nets, topics, events, bursts, parts, rng, st):
    """Sort all posts by time, add organic reshares, write own posts, build the posts table."""
    offsets = np.cumsum([0] + [len(p["t"]) for p in parts[:-1]])
    plan = {k: np.concatenate([p[k] for p in parts]) for k in PLAN}
    plan["reshare"] = np.concatenate([np.where(p["reshare"] >= 0, p["reshare"] + off, -1)
                                      for p, off in zip(parts, offsets)])
    written = [post for p in parts if p["posts"] for post in p["posts"]]
    pre = np.concatenate([np.zeros(len(p["t"])) if p["posts"] is not None
                          else np.full(len(p["t"]), -1) for p in parts]).astype(np.int64)
    pre[pre >= 0] = np.arange(len(written))  # index into ``written``, -1 = write it later
    order = np.argsort(plan["t"], kind="stable")
    n = len(order)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    acct, t, topic, event, kind, reshare, lang, story = (plan.pop(k)[order] for k in PLAN)
    pre = pre[order]
    reshare = np.where(reshare >= 0, rank[np.maximum(reshare, 0)], -1)

    # A few own posts on Facebook are reshares of an earlier original Facebook post.
    facebook = acc["kind"][acct] != INSTAGRAM
    wants = (kind == KIND_OWN) & facebook & (rng.random(n) < 0.03)
    pool = np.flatnonzero(facebook & ~wants & (reshare < 0))
    rows = np.flatnonzero(wants)
    before = np.searchsorted(pool, rows)
    rows, before = rows[before > 0], before[before > 0]
    src = pool[(rng.random(len(rows)) * before).astype(np.int64)]
    rows, src = rows[acct[src] != acct[rows]], src[acct[src] != acct[rows]]
    reshare[rows] = src
    content = np.arange(n)  # the row whose text, link and tags a row shows
    content[rows] = src

    cols = _write(st, acc, nets, topics, bursts, written, acct, topic, lang, story, pre, content)
    topic = topic[content]  # a reshare shows its source's narrative but keeps its own event
    ids = pc.binary_join_element_wise("p", pc.utf8_lpad(
        pa.array(np.arange(1, n + 1)).cast(pa.string()), max(6, len(str(n))), "0"), "")
    ids = ids.cast(pa.large_string())
    kinds = acc["kind"][acct]
    table = pa.table({
        "post_id": ids,
        "account_id": _strings(acc["id"]).take(acct),
        "created_at": pa.chunked_array([_strings(_iso(start, t[lo:lo + 100_000]))
                                        for lo in range(0, max(n, 1), 100_000)]),
        "text": cols[0],
        "url": cols[1],
        "account_name": _strings(acc["name"]).take(acct),
        "account_type": _strings(ACCOUNT_TYPES).take(kinds),
        "platform": _strings(["facebook", "instagram"]).take((kinds == INSTAGRAM).astype(int)),
        "lang": _strings(np.full(n, "", dtype="U1")),
        "reshare_of": ids.take(pa.array(reshare, mask=reshare < 0)).fill_null(""),
        "hashtags": cols[2],
    })
    shared: dict[tuple[int, int], list] = {}  # one label list per (narrative, event)
    labels = {}
    for pid, key in zip(ids.to_pylist(), zip(topic.tolist(), event.tolist())):
        if key not in shared:
            shared[key] = [topics[key[0]]["name"], events[key[1]] if key[1] >= 0 else None]
        labels[pid] = shared[key]
    return table.to_pandas(), labels


def _write(st, acc, nets, topics, bursts, written, acct, topic, lang, story, pre, content,
           block: int = 50_000) -> list[pa.ChunkedArray]:
    """Text, url and hashtags columns in final order; own posts are written here, in blocks."""
    is_src = np.zeros(len(acct), dtype=bool)
    is_src[content[content != np.arange(len(acct))]] = True
    stash: dict[int, tuple] = {}  # posts that a later row reshares
    out: list[list] = [[], [], []]
    for lo in range(0, len(acct), block):
        posts = []
        for i, c, p, a, tp, lg, sto, keep in zip(range(lo, lo + block), *(
                x[lo:lo + block].tolist() for x in (content, pre, acct, topic, lang, story,
                                                     is_src))):
            if c != i:
                post = stash[c]
            elif p >= 0:
                post = written[p]
            else:
                language = simdata.LANGS[lg]
                facts = bursts[sto]["facts"][language] if sto >= 0 else None
                post = _own_text(st, acc, nets, topics[tp], language, a, facts)
            if keep:
                stash[i] = post
            posts.append(post)
        for column, values in zip(out, zip(*posts)):
            column.append(_strings(values))
    return [pa.chunked_array(column, type=pa.large_string()) for column in out]
