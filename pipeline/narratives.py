"""Narrative summaries: size, accounts, span, key terms and phrases (class-based TF-IDF),
named entities, languages and representative posts.

Copypasta is the signal Lockstep hunts, so everything here is duplicate-aware: a text posted a
hundred times is analysed once and counts once for terms (entities and languages count posts),
and no two example posts share a text.

Each post is analysed in its own language. English goes through spaCy (lemmas, noun phrases from
part-of-speech patterns, named entities); Urdu and Hindi through spaCy's Urdu and Hindi tokenisers
with their stop words, so words in Arabic script and Devanagari stay whole; Roman Urdu / Hinglish
and other languages through a plain word tokeniser with the project's Roman-Urdu stop words. The
language is the `lang` column where it is filled, else a guess from the script of the post.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import unicodedata
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pandas as pd
import regex
from scipy import sparse

from . import analysis_cache, spacy_load
from .config import SummariseConfig
from .errors import ConfigError
from .lang import text_digest

if TYPE_CHECKING:
    from . import spacy_helper

log = logging.getLogger(__name__)

_URL = regex.compile(r"(?i)\b(?:https?://|www\.)\S+")
_MENTION = regex.compile(r"(?<!\w)@\w+")
# letters, combining marks (Devanagari matras, Arabic harakat) and digits stay in one token
_TOKEN = regex.compile(r"[\p{L}\p{M}\p{N}_]+(?:['’][\p{L}]+)?")
_SPACE = regex.compile(r"\s+")
_LETTER = regex.compile(r"\p{L}")
_NOT_WORD = regex.compile(r"[^\p{L}\p{M}\p{N}]+")


# Roman Urdu / Hinglish function words (spaCy has no list for romanised text)
ROMAN_URDU_STOP_WORDS = frozenset("""
    aa aap ab aur bhi bohat bahut bas de di diya diye do dono ek gaya gayi gaye hai hain ham hamara
    hamare hamari hum humara humare humari hi ho hoga hogi honge hua hui hue is isi jab jo ka kab
    kar karo karna karne kare karein ke kehte ki kiya kiye kis ko koi kuch kya le liye lo log
    magar main mein mera mere meri ne nahi nahin na par pe phir raha rahi rahe sab se tak tha
    the thi to tum un unka unki unke us uska uski uske wala wale wali woh wo ya yeh ye yahan
""".split())


# Urdu function words. spaCy's Urdu list is mis-encoded (many entries are mojibake), so the
# common ones are listed here in standard Urdu code points (ی U+06CC, ک U+06A9, ہ U+06C1).
URDU_STOP_WORDS = frozenset("""
    میں نے کے کی کا ہے ہیں تھا تھی تھے سے کو پر اور یہ وہ بھی تو ہی جو کہ کر رہا رہی رہے لیا لیے
    لئے گیا گئی گئے ہو ہوں ہوا ہوئی ہوئے ایک اس ان کیا کیے جب تک نہیں نہ ہم آپ اپنے اپنی اپنا سب
    کچھ یہاں وہاں ساتھ بعد پہلے والے والی والا کوئی کسی کرنے کرتے کریں گا گی گے دیا دی دیے
""".split())

# web and social-media filler
_EXTRA = frozenset({"amp", "rt", "via", "http", "https", "www", "com", "ll", "ve", "don", "didn"})


def _stop_words() -> dict[str, frozenset[str]]:
    en = spacy_load.stop_words("en") | _EXTRA
    ur = spacy_load.stop_words("ur") | URDU_STOP_WORDS | en  # English is common in Urdu posts
    hi = spacy_load.stop_words("hi") | en
    roman = ROMAN_URDU_STOP_WORDS | en
    return {"en": en, "ur": ur, "hi": hi, "roman": roman, "other": ur | hi | roman}


STOP_BY_ANALYSER = _stop_words()
STOP_WORDS = STOP_BY_ANALYSER["other"]  # every list, for text of unknown language

ENTITY_TYPES = ("PERSON", "ORG", "GPE", "NORP")


def dedupe_key(text: str) -> str:
    """Two posts are the same text when they match after this (case, links, spacing ignored)."""
    text = _URL.sub(" ", text.casefold())
    return _SPACE.sub(" ", text).strip()


def text_key(text: str) -> str:
    """Stricter folding for summaries: also Unicode compatibility forms, @mentions, a leading
    RT and punctuation, so copies that differ only in those count as one text."""
    text = _MENTION.sub(" ", _URL.sub(" ", unicodedata.normalize("NFKC", text).casefold()))
    text = _SPACE.sub(" ", _NOT_WORD.sub(" ", text)).strip()
    return text[3:] if text.startswith("rt ") else text


# -- languages ---------------------------------------------------------------------------------

_SCRIPTS = (("ur", regex.compile(r"\p{Script=Arabic}")),
            ("hi", regex.compile(r"\p{Script=Devanagari}")),
            ("en", regex.compile(r"\p{Script=Latin}")))


def script_lang(text: str) -> str:
    """A cheap guess from the letters: mostly Arabic script -> ur, Devanagari -> hi, else en."""
    counts = [(len(p.findall(text)), lang) for lang, p in _SCRIPTS]
    n, lang = max(counts, key=lambda c: c[0])
    return lang if n else "en"


def analyser_for(lang: str) -> str:
    """Which tokeniser a language code goes through: en, ur, hi, roman (Latin-script Urdu or
    Hindi such as ur-Latn, hi-Latn) or other (plain words, every stop-word list)."""
    code = lang.strip().lower().replace("_", "-")
    base, _, script = code.partition("-")
    if base in ("ur", "hi") and script in ("latn", "roman"):
        return "roman"
    if base in ("en", "ur", "hi"):
        return base
    return "other"


# the analysers whose texts go through the English spaCy pipeline (the others are split into
# words by plain_terms)
SPACY_ANALYSERS = ("en", "latin")


def text_analyser(lang: str, guessed: bool) -> str:
    """The analyser a post's text goes through: analyser_for its language, but latin for a
    Latin-script text whose language was guessed (it may be Roman Urdu: English with the Roman
    Urdu stop words too)."""
    analyser = analyser_for(lang)
    return "latin" if guessed and analyser == "en" else analyser


def post_languages(posts: pd.DataFrame) -> tuple[pd.Series, np.ndarray, str]:
    """The language of every post, which ones were guessed, and where the languages came
    from: the `lang` column where filled, the script of the text where not."""
    texts = posts["text"].fillna("").astype(str)
    given = (posts["lang"].fillna("").astype(str).str.strip() if "lang" in posts
             else pd.Series("", index=posts.index))
    missing = (given == "").to_numpy()
    if missing.any():
        given = given.where(~missing, texts[missing].map(script_lang))
    source = ("script" if missing.all() else
              "lang column, script where empty" if missing.any() else "lang column")
    return given, missing, source


# -- terms -------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    return _MENTION.sub(" ", _URL.sub(" ", text))


def tokens(text: str, analyser: str = "other") -> list[str]:
    """Words of a text with links, mentions, numbers and stop words removed (no lemmas)."""
    stop = STOP_BY_ANALYSER[analyser]
    out = []
    for tok in _TOKEN.findall(_clean(text).casefold()):
        if len(tok) < 2 or tok in stop or tok.isdigit():
            continue
        out.append(tok)
    return out


def _plain_terms(words: list[str | None]) -> list[str]:
    """Words plus the pairs of words that stood side by side (None marks a removed word)."""
    kept = [w for w in words if w]
    return kept + [f"{a} {b}" for a, b in zip(words, words[1:]) if a and b]


def _word_or_none(tok: str, stop: frozenset[str]) -> str | None:
    tok = tok.casefold()
    if len(tok) < 2 or tok in stop or not _LETTER.search(tok):
        return None
    return tok


def plain_terms(text: str, analyser: str) -> list[str]:
    """Terms of a non-English text: words kept whole, and adjacent pairs."""
    stop = STOP_BY_ANALYSER[analyser]
    if analyser in ("ur", "hi"):
        toks = [t.text for t in _blank(analyser).tokenizer(_clean(text))]
        words = [_word_or_none(t, stop) if _TOKEN.fullmatch(t) else None for t in toks]
    else:
        words = [_word_or_none(t, stop) for t in _TOKEN.findall(_clean(text))]
    return _plain_terms(words)


@lru_cache(maxsize=None)
def _blank(lang: str):
    return spacy_load.import_spacy().blank(lang)


@lru_cache(maxsize=2)
def english(model: str):
    """The English pipeline without the parser (noun phrases come from tags, far cheaper)."""
    spacy = spacy_load.import_spacy(model)
    from thinc.api import use_ops

    try:
        # matrix products through numpy's BLAS, not blis: the analysis takes a third less time
        # here, with the same terms and entities (tests/test_narratives.py)
        with use_ops("numpy", use_blis=False):
            return spacy.load(model, exclude=["parser"])
    except OSError as exc:
        raise ConfigError(f"summarise.spacy_model ({model!r}) is not installed: {exc}. Install "
                          "it, or set summarise.spacy_model to an installed English pipeline "
                          "such as en_core_web_sm") from exc


def release_models() -> None:
    """Forget the loaded spaCy pipelines (with the strings they learnt from the texts parsed);
    the next summary loads them again. A run calls this once its summaries are written."""
    english.cache_clear()
    _blank.cache_clear()


_NP_POS = {"ADJ", "NOUN", "PROPN"}
_HEAD_POS = {"NOUN", "PROPN"}


def _word(tok, stop: frozenset[str]) -> str | None:
    """The lemma of a content word, else None."""
    if tok.is_punct or tok.is_space or tok.like_url or tok.like_email or tok.like_num:
        return None
    low = tok.lower_
    lemma = tok.lemma_.casefold()
    if low in stop or lemma in stop or not _LETTER.search(lemma):
        return None
    return lemma


def english_terms(doc, stop: frozenset[str]) -> list[str]:
    """Lemmas of the content words, and noun phrases: runs of adjectives and nouns ending in a
    noun (at most four words, the last one lemmatised: 'pakistani soldiers' -> 'pakistani
    soldier'), the part-of-speech pattern of keyphrase extractors."""
    out: list[str] = []
    run: list[str] = []
    run_pos: list[str] = []

    def close() -> None:
        while run and run_pos[-1] not in _HEAD_POS:
            run.pop()
            run_pos.pop()
        if len(run) >= 2:
            out.append(" ".join(run[-4:]))
        run.clear()
        run_pos.clear()

    for tok in doc:
        lemma = _word(tok, stop)
        if lemma is not None and len(lemma) >= 2:
            out.append(lemma)
        if lemma is not None and tok.pos_ in _NP_POS:
            run.append(lemma if tok.pos_ in _HEAD_POS else tok.lower_)
            run_pos.append(tok.pos_)
            continue
        close()
    close()
    return out


def _entity_key(ent, stop: frozenset[str]) -> tuple[str, str, str] | None:
    """(type, folded text, text) of an entity worth counting, else None. Hashtags are left to
    the hashtag counts, and an entity needs a capital letter: the small English models tag
    lower-case Roman Urdu ('hai', 'ki nazar') as places and people."""
    doc = ent.doc
    if ent.label_ not in ENTITY_TYPES or (ent.start > 0 and doc[ent.start - 1].text == "#"):
        return None
    if any(t.lower_ in stop for t in ent if t.lower_ not in STOP_BY_ANALYSER["en"]):
        return None  # a Roman Urdu function word inside: not an English name
    text = _SPACE.sub(" ", ent.text).strip(" \"'“”‘’.,:;!?#")
    if text.casefold().startswith("the "):
        text = text[4:]
    if text.endswith(("'s", "’s")):
        text = text[:-2]
    if len(text) < 2 or not regex.search(r"\p{Lu}", text):
        return None
    return ent.label_, text.casefold(), text


@dataclass
class Analysis:
    """What one distinct text yields."""

    terms: list[str]
    entities: list[tuple[str, str, str]] | None = None  # (type, key, surface); None: not run


def _interned(terms: list[str]) -> list[str]:
    """The same terms, each word or phrase one shared string: a few hundred thousand analysed
    texts repeat the same vocabulary millions of times."""
    return [sys.intern(t) for t in terms]


def analyse(texts: dict[str, tuple[str, str]], want_entities: set[str], cfg: SummariseConfig,
            ahead: Callable[[], dict[bytes, tuple[list[str], list]]] | None = None,
            helper: spacy_helper.Helper | None = None,
            meanwhile: Callable[[], None] | None = None) -> dict[str, Analysis]:
    """Terms (and entities, for the keys in want_entities) of each distinct text, each analysed
    once. texts: key -> (text, analyser); analyser is one of analyser_for's names, or latin (a
    Latin-script text of unknown language: English with the Roman-Urdu stop words too).
    ``ahead`` returns the analyses (with entities) made while the fit ran (prefetch.py), by
    analysis-cache key; it is called only when there are English texts. ``helper``: the run's
    ready spaCy process (spacy_helper.py), which analyses English texts beside this one.
    ``meanwhile``: the caller's own work, done here once, while other processes analyse (when
    there are any)."""
    spacy_load.use(cfg.spacy_model)  # before the Urdu and Hindi tokenisers import spaCy
    english_keys = [k for k, (_, analyser) in texts.items() if analyser in SPACY_ANALYSERS]
    out: dict[str, Analysis] = {}

    def analyse_others() -> None:  # here while the workers start, if there are any
        for key, (text, analyser) in texts.items():
            if analyser not in SPACY_ANALYSERS:
                out[key] = Analysis(_interned(plain_terms(text, analyser)))
        if meanwhile is not None:
            meanwhile()

    if not english_keys:
        analyse_others()
        return out
    cache = _analysis_cache(cfg)
    hashes = {k: analysis_cache.text_hash(texts[k][1], texts[k][0]) for k in english_keys}
    cached = cache.get([hashes[k] for k in english_keys],
                       {hashes[k] for k in english_keys if k in want_entities}) if cache else {}
    got = ahead() if ahead is not None else {}
    # the entities of a text that wants none are dropped, as the cache drops them
    early = {h: (got[h][0], got[h][1] if k in want_entities else None)
             for k, h in hashes.items() if h in got and h not in cached}
    cached.update(early)
    fresh: dict[str, Analysis] = {}
    # NER has its own embedding layer in the small English pipelines, so texts that need no
    # entities skip it entirely; both passes share one set of worker processes
    passes = {need_ner: [k for k in english_keys
                         if (k in want_entities) == need_ner and hashes[k] not in cached]
              for need_ner in (True, False)}
    todo = [(keys, need_ner) for need_ner, keys in passes.items() if keys]
    with analysis_pool(cfg, sum(map(len, passes.values())), helper) as pool:
        found = analyse_passes([([texts[k] for k in keys], need_ner) for keys, need_ner in todo],
                               cfg, pool, meanwhile=analyse_others, helper=helper)
    for (keys, _), results in zip(todo, found):  # analyse_passes's terms are shared strings
        fresh.update((k, Analysis(t, e)) for k, (t, e) in zip(keys, results))
    for need_ner in (True, False):  # the order the texts were analysed in without a cache
        for key in english_keys:
            if (key in want_entities) == need_ner:
                if key in fresh:
                    out[key] = fresh[key]
                else:
                    terms_, ents_ = cached[hashes[key]]
                    out[key] = Analysis(_interned(terms_), ents_)
    if cache is not None and (fresh or got):  # all analysed ahead: a later run may want them
        cache.put({**got, **{hashes[k]: (a.terms, a.entities) for k, a in fresh.items()}})
    log.info("summarise: %d distinct English texts, %d from the analysis cache, %d analysed "
             "ahead, %d analysed now", len(english_keys),
             len(english_keys) - len(fresh) - len(early), len(early), len(fresh))
    return out


# Below this many texts per process, starting another process (Python, spaCy and the model,
# about 1 s here) costs more than it saves. This process analyses too, so a second process
# is one worker more.
MIN_TEXTS_PER_PROCESS = 500
# texts per task (whole nlp.pipe batches): small enough that the last tasks of the workers
# and of this process end close together (a task of 256 is 0.4 to 1 s)
TEXTS_PER_TASK = 256


def analysis_processes(cfg: SummariseConfig, n_texts: int, helper: bool = False) -> int:
    """How many processes, this one included, analyse ``n_texts`` English texts:
    summarise.n_process (0: one per CPU), fewer when there are too few texts to be worth a
    process each. With ``helper`` (a ready spaCy process, spacy_helper.py), two from the first
    text: that one costs nothing to start."""
    wanted = cfg.n_process or os.cpu_count() or 1
    n = max(1, min(wanted, n_texts // MIN_TEXTS_PER_PROCESS))
    return 2 if helper and n == 1 and wanted >= 2 and n_texts > 0 else n


@contextmanager
def analysis_pool(cfg: SummariseConfig, n_texts: int,
                  helper: spacy_helper.Helper | None = None) -> Iterator[object | None]:
    """Worker processes for ``analyse_english`` (``analysis_processes`` of them less this one),
    or None when this process does the work alone. One worker: ``helper``'s process when there
    is one; else, and for more than one, spawned processes that each load their spaCy pipeline
    once."""
    ready = _helper_pool(helper)
    n = analysis_processes(cfg, n_texts, ready is not None)
    if n == 1:
        yield None
        return
    if n == 2 and ready is not None:
        yield ready  # the run closes it
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import _spacy_worker

    with ProcessPoolExecutor(n - 1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_spacy_worker.without_torch) as pool:
        yield pool


def _helper_pool(helper: spacy_helper.Helper | None):
    """The helper's one-process pool, or None (no helper, or closed)."""
    return helper.pool if helper is not None else None


def analyse_english(items: list[tuple[str, str]], need_ner: bool, cfg: SummariseConfig,
                    pool=None, helper: spacy_helper.Helper | None = None
                    ) -> list[tuple[list[str], list[str] | None]]:
    """Terms (and entities, with ``need_ner``) of English texts, ``(text, analyser)`` each, in
    order, in this process or on the worker processes of ``analysis_pool`` (``pool``, or a
    pool of its own). A task is a run of whole ``cfg.batch_size`` batches, so every
    ``nlp.pipe`` batch holds the texts it holds in one process and the results are the same
    whatever the number of processes (tests/test_narratives.py). A task that fails, or a
    worker that dies, leaves its texts to this process. ``helper`` as in ``analysis_pool``."""
    return analyse_passes([(items, need_ner)], cfg, pool, helper=helper)[0]


def analyse_passes(passes: list[tuple[list[tuple[str, str]], bool]], cfg: SummariseConfig,
                   pool=None, meanwhile: Callable[[], None] | None = None,
                   helper: spacy_helper.Helper | None = None
                   ) -> list[list[tuple[list[str], list[str] | None]]]:
    """``analyse_english`` of several lists of texts, each with NER or without, in tasks
    shared by this process and the workers of ``pool``. All lists' tasks are in one queue:
    each worker takes the first task left, one at a time, and this process the last, so no
    process idles between lists and all end within a task of each other. ``meanwhile`` is
    other work this process does first, while the workers start. ``helper`` as in
    ``analysis_pool``: ``pool`` is the one it makes, or the one it would."""
    total = sum(len(items) for items, _ in passes)
    if pool is None:
        with analysis_pool(cfg, total, helper) as own:
            if own is not None:
                return analyse_passes(passes, cfg, own, meanwhile, helper)
            if meanwhile is not None:
                meanwhile()
            return [_analyse_part(items, need_ner, cfg.spacy_model, cfg.batch_size)
                    for items, need_ner in passes]
    ready = _helper_pool(helper)
    n_workers = max(1, analysis_processes(cfg, total, ready is not None) - 1)
    # a helper there only because it is ready (too few texts for a process that starts now)
    # does them all: loading spaCy here would take longer than what would be left to do
    here_too = not (ready is not None and pool is ready and analysis_processes(cfg, total) == 1)
    step = max(1, TEXTS_PER_TASK // cfg.batch_size) * cfg.batch_size
    tasks = [(p, a, min(a + step, len(items)))
             for p, (items, _) in enumerate(passes) for a in range(0, len(items), step)]
    queue = deque(range(len(tasks)))
    lock = threading.Lock()
    done: dict[int, list] = {}
    failed: list[int] = []  # tasks a worker failed: this process does them

    def part(i: int) -> tuple:  # (a process that analyses beside another shares the CPUs)
        p, a, b = tasks[i]
        return (passes[p][0][a:b], passes[p][1], cfg.spacy_model, cfg.batch_size,
                here_too or n_workers > 1)

    def feed() -> None:  # one thread per worker; a worker that fails gets no more tasks
        while True:
            with lock:
                if not queue:
                    return
                i = queue.popleft()
            try:
                got = pool.submit(_analyse_part, *part(i)).result()
            # BaseException too: a worker's KeyboardInterrupt comes back here, and a thread
            # that let it out would print a traceback (this process gets its own interrupt)
            except BaseException as exc:  # noqa: BLE001 (the work here says what was wrong)
                log.warning("summarise: an analysis process failed (%s: %s); this process "
                            "analyses its texts and the rest", type(exc).__name__, exc)
                with lock:
                    failed.append(i)
                return
            done[i] = [(_interned(terms), ents) for terms, ents in got]

    feeders = [threading.Thread(target=feed, name=f"analysis-feed-{n}", daemon=True)
               for n in range(n_workers)]
    for thread in feeders:
        thread.start()
    here = 0
    try:
        if meanwhile is not None:
            meanwhile()
        while here_too:
            with lock:
                if not queue:
                    break
                i = queue.pop()
            done[i] = _analyse_part(*part(i))
            here += 1
    except BaseException:  # the workers finish the task they have, and stop
        with lock:
            queue.clear()
        raise
    finally:
        for thread in feeders:
            thread.join()
    # what the workers left: a failed task, and (without this process) the tasks after it
    left = [*failed, *queue]
    for i in left:
        done[i] = _analyse_part(*part(i))
    log.debug("summarise: %d of %d analysis tasks done in this process", here + len(left),
              len(tasks))
    out: list[list[tuple[list[str], list[str] | None]]] = [[] for _ in passes]
    for i, (p, _, _) in enumerate(tasks):
        out[p] += done.pop(i)
    return out


def _analyse_part(items: list[tuple[str, str]], need_ner: bool, model: str, batch_size: int,
                  shared: bool = False) -> list[tuple[list[str], list[str] | None]]:
    """``analyse_english`` in one process (this one, or a worker that loads the model). A
    Latin-script post of unknown language may be Roman Urdu: its stop words go too. ``shared``:
    other processes analyse (or fit) at the same time, so this one uses one BLAS thread."""
    stops = {"en": STOP_BY_ANALYSER["en"], "latin": STOP_BY_ANALYSER["roman"]}
    nlp = english(model)
    disable = [] if need_ner else ["ner"]
    out = []
    # the memory zone frees the strings spaCy learns from these texts once they are analysed
    # (its string store otherwise only grows, about 15 MB per 1,000 texts), so one process
    # can analyse any number of texts
    with nlp.select_pipes(disable=[p for p in disable if p in nlp.pipe_names]), \
            nlp.memory_zone(), _blas_threads(1 if shared else None):
        docs = nlp.pipe((_clean(text) for text, _ in items), batch_size=batch_size)
        for (_, analyser), doc in zip(items, docs):
            stop = stops[analyser]
            ents = [k for k in (_entity_key(e, stop) for e in doc.ents) if k] if need_ner \
                else None
            # each term one shared string as it is made, as before analyse_english: a whole
            # group's terms held unshared first (up to ~100k texts at 1M posts) cost memory
            out.append((_interned(english_terms(doc, stop)), ents))
    return out


@contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    """At most ``n`` BLAS threads in this process (None: as the library has them). numpy's BLAS
    (``english``) starts a thread per CPU: two processes analysing on two CPUs, each with two
    threads, took 8.0 s for the 5,500-post corpus's summaries here, against 5.4 s with one."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def _analysis_cache(cfg: SummariseConfig) -> analysis_cache.AnalysisCache | None:
    """The on-disk analysis cache for this spaCy pipeline and these settings, or None (off)."""
    if not cfg.cache_dir:
        return None
    spacy_version, version = spacy_load.versions(cfg.spacy_model)
    if version is None:  # a pipeline whose meta.json cannot be read: what it loads says
        version = spacy_load.meta_version(english(cfg.spacy_model).meta)
    settings = (spacy_version, ENTITY_TYPES, sorted(_NP_POS), sorted(_HEAD_POS),
                {name: analysis_cache.settings_digest(sorted(STOP_BY_ANALYSER[name]))
                 for name in ("en", "roman")})
    return analysis_cache.AnalysisCache(cfg.cache_dir, cfg.spacy_model, version, settings)


def terms(text: str, analyser: str = "other") -> list[str]:
    """Terms of one text as the summaries see them (English through spaCy)."""
    if analyser not in SPACY_ANALYSERS:
        return plain_terms(text, analyser)
    return analyse({"k": (text, "en")}, set(), SummariseConfig(cache_dir=""))["k"].terms


def class_tfidf(docs_by_class: dict[int, list[list[str]]], n_terms: int) -> dict[int, list[str]]:
    """Top terms per class (each doc a list of its terms): tf within the class times
    log(1 + mean class size / term total), BERTopic's c-TF-IDF."""
    classes = sorted(docs_by_class)
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    doc_freq: dict[str, int] = {}
    for row, c in enumerate(classes):
        counts: dict[str, int] = {}
        for doc in docs_by_class[c]:
            for t in doc:
                counts[t] = counts.get(t, 0) + 1
            for t in set(doc):
                doc_freq[t] = doc_freq.get(t, 0) + 1
        for t, n in counts.items():
            rows.append(row)
            cols.append(vocab.setdefault(t, len(vocab)))
            vals.append(n)
    if not vocab:
        return {c: [] for c in classes}
    n_docs = sum(len(d) for d in docs_by_class.values())
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(classes), len(vocab)), dtype=np.float64)
    names = np.empty(len(vocab), dtype=object)
    for t, j in vocab.items():
        names[j] = t
    # terms seen in a single post are anecdotes, not a narrative's vocabulary
    if n_docs >= 20:
        keep = np.array([doc_freq[t] >= 2 for t in names])
        m = m.multiply(keep[None, :]).tocsr()
    class_sizes = np.asarray(m.sum(axis=1)).ravel()
    tf = sparse.diags(1.0 / np.maximum(class_sizes, 1)) @ m
    term_totals = np.asarray(m.sum(axis=0)).ravel()
    idf = np.log1p(class_sizes.mean() / np.maximum(term_totals, 1))
    scores = (tf @ sparse.diags(idf)).tocsr()
    out: dict[int, list[str]] = {}
    for row, c in enumerate(classes):
        r = scores.getrow(row)
        nz = r.data > 0
        data, indices = r.data[nz], r.indices[nz]
        order = np.lexsort((names[indices], -data))  # score desc, then term for ties
        picked: list[str] = []
        for j in indices[order]:
            t = names[j]
            # a word already inside a chosen phrase adds nothing
            if any(t in p.split(" ") for p in picked if " " in p):
                continue
            picked.append(t)
            if len(picked) == n_terms:
                break
        out[c] = picked
    return out


def make_label(top_terms: list[str], fallback: str, max_chars: int = 60) -> str:
    """A short label: the best noun phrases first, then single words not already in them."""
    phrases = [t for t in top_terms if " " in t][:2]
    parts = list(phrases)
    for t in top_terms:
        if len(parts) >= 3:
            break
        if t in parts or any(t in p.split(" ") for p in phrases):
            continue
        if " " not in t:
            parts.append(t)
    label = ""
    for p in parts:
        nxt = f"{label}, {p}" if label else p
        if len(nxt) > max_chars and label:
            break
        label = nxt
    return label or fallback


def representative(idx: np.ndarray, vectors: np.ndarray, texts: list[str], k: int) -> list[int]:
    """The k posts nearest the narrative's centroid, no two with the same text (after folding
    case, spacing, links, mentions and punctuation)."""
    sub = vectors[idx]
    centroid = sub.mean(axis=0)
    norm = np.linalg.norm(centroid)
    sims = sub @ (centroid / norm) if norm > 0 else np.zeros(len(idx))
    order = np.lexsort((idx, -sims))
    chosen: list[int] = []
    seen: set[str] = set()
    for j in order:
        key = text_key(texts[idx[j]])
        if key in seen:
            continue
        seen.add(key)
        chosen.append(int(idx[j]))
        if len(chosen) == k:
            break
    return chosen


_LINK = regex.compile(r"(?i)\bhttps?://([^/\s:?#]+)")


def _column(posts: pd.DataFrame, name: str) -> pd.Series:
    if name not in posts:
        return pd.Series([""] * len(posts), index=posts.index)
    return posts[name].fillna("").astype(str).str.strip()


def _domain(url: str, text: str) -> str:
    """The host of the post's link (its url column, else the first link in its text)."""
    m = _LINK.search(url) or _LINK.search(text or "")
    host = m.group(1).lower() if m else ""
    return host[4:] if host.startswith("www.") else host


def _domains(urls: pd.Series, texts: pd.Series) -> pd.Series:
    """_domain of every post; only posts with '://' in their url or text are looked at."""
    out = pd.Series("", index=urls.index, dtype=object)
    linked = np.flatnonzero((urls.str.contains("://", regex=False)
                             | texts.str.contains("://", regex=False)).to_numpy(dtype=bool))
    if len(linked):
        out.iloc[linked] = [_domain(u, t) for u, t in zip(urls.iloc[linked], texts.iloc[linked])]
    return out


def _top(values: pd.Series, k: int) -> list[dict]:
    """The k most common non-empty values with counts (ties alphabetical)."""
    v = values.dropna()
    v = v[v.astype(str) != ""]
    counts = v.value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return [{"value": str(x), "n": int(n)} for x, n in counts.head(k).items()]


def _entities(keys: list[str], n_posts: dict[str, int], found: dict[str, Analysis],
              k: int) -> list[dict]:
    """Entities with the number of posts naming them, most named first. One name is one
    entity: the small model tags the same name differently from post to post ('Oracle' as ORG,
    GPE, PERSON), so it takes the type it got in most posts."""
    count: dict[str, int] = {}
    types: dict[str, dict[str, int]] = {}
    surface: dict[str, dict[str, int]] = {}
    for key in keys:
        ents = found[key].entities if key in found else None
        named = {}
        for label, folded, text in ents or []:
            named.setdefault(folded, (label, text))
        for folded, (label, text) in named.items():
            n = n_posts[key]
            count[folded] = count.get(folded, 0) + n
            for table, value in ((types, label), (surface, text)):
                tally = table.setdefault(folded, {})
                tally[value] = tally.get(value, 0) + n
    ranked = sorted(count, key=lambda f: (-count[f], f))

    def most(tally: dict[str, int]) -> str:
        return min(tally, key=lambda v: (-tally[v], v))

    return [{"text": most(surface[f]), "type": most(types[f]), "n": count[f]}
            for f in ranked[:k]]


@dataclass
class Summary:
    table: pd.DataFrame  # one row per narrative (noise excluded), for narratives.csv
    details: list[dict] = field(default_factory=list)  # full detail, for narratives.json
    n_noise: int = 0


class _Texts:
    """One text column read a row at a time (positions, not index labels), so nothing holds a
    Python list of a million post texts."""

    def __init__(self, column: pd.Series) -> None:
        self.column = column

    def __getitem__(self, i: int) -> str:
        value = self.column.iat[int(i)]
        return "" if pd.isna(value) else str(value)


def _key_ids(texts: pd.Series, rows: np.ndarray, chunk: int = 65_536
             ) -> tuple[np.ndarray, np.ndarray, int, list[bytes]]:
    """An id for the text_key of each of the rows' texts (ids in order of first appearance),
    the position in rows of each id's first text, the id of the empty key (-1: none) and each
    id's key digest. Texts are read and folded a chunk at a time and keys held as 16-byte
    digests, so a million posts never make a million Python strings at once."""
    ids = np.empty(len(rows), dtype=np.int64)
    index: dict[bytes, int] = {}
    first: list[int] = []
    for start in range(0, len(rows), chunk):
        part = texts.iloc[rows[start:start + chunk]].fillna("").astype(str).tolist()
        got = []
        for j, text in enumerate(part):
            d = text_digest(text_key(text))
            k = index.get(d)
            if k is None:
                k = index[d] = len(first)
                first.append(start + j)
            got.append(k)
        ids[start:start + len(part)] = got
    return ids, np.asarray(first, dtype=np.int64), index.get(text_digest(""), -1), list(index)


_MASK64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters nearby inputs."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ranks(digests: list[bytes], seed: int) -> np.ndarray:
    """A seeded 64-bit rank for each key digest. A narrative's sample is its texts of lowest
    rank (a bottom-k sample), so a text keeps its place in the sample when posts are added:
    new texts displace only the sampled texts they outrank, and an update analyses little more
    than its new texts (the analysis cache has the rest)."""
    low = np.frombuffer(b"".join(d[:8] for d in digests), dtype="<u8").astype(np.uint64)
    salt = _mix64(np.array([(seed * 0x9E3779B97F4A7C15) & _MASK64], dtype=np.uint64))[0]
    return _mix64(low ^ salt)


def _lowest(rank: np.ndarray, k: int) -> np.ndarray:
    """Positions 0..n-1, or those of the k lowest ranks (in position order) when n is larger."""
    if len(rank) <= k:
        return np.arange(len(rank))
    return np.sort(np.argsort(rank, kind="stable")[:k])


@dataclass
class _Distinct:
    """The distinct texts of one narrative scored for terms (all, or a seeded sample), as key
    ids in the order of their first post, and how many of the narrative's posts carry each."""

    terms: np.ndarray  # key ids scored for terms
    n_posts: dict[int, int]  # key id -> posts of the narrative carrying it


def _distinct_texts(kid: np.ndarray, bounds: list[tuple[int, int]],
                    empty: int, cfg: SummariseConfig, rank: np.ndarray
                    ) -> tuple[list[_Distinct], set[int]]:
    """Each narrative's distinct texts and the keys wanted with entities. A narrative with more
    texts than the caps keeps those of lowest rank: max_texts_for_terms for terms, and the
    max_texts_for_entities lowest of those for entities."""
    out, want_entities = [], set()
    for s, e in bounds:
        seg = kid[s:e]
        uniq, first, count = np.unique(seg, return_index=True, return_counts=True)
        by_first = np.argsort(first, kind="stable")
        uniq, count = uniq[by_first], count[by_first]
        keep = uniq != empty
        uniq, count = uniq[keep], count[keep]
        pick = _lowest(rank[uniq], cfg.max_texts_for_terms)
        uniq, count = uniq[pick], count[pick]
        ner = _lowest(rank[uniq], cfg.max_texts_for_entities)
        want_entities.update(uniq[ner].tolist())
        out.append(_Distinct(uniq, dict(zip(uniq.tolist(), count.tolist()))))
    return out, want_entities


def run(posts: pd.DataFrame, labels: np.ndarray, vectors: np.ndarray, cfg: SummariseConfig,
        seed: int, ahead: Callable[[], dict[bytes, tuple[list[str], list]]] | None = None,
        helper: spacy_helper.Helper | None = None,
        meanwhile: Callable[[], None] | None = None) -> Summary:
    """The narratives' summaries; ``ahead``, ``helper`` and ``meanwhile`` as in ``analyse``."""
    t0 = time.perf_counter()
    labels = np.asarray(labels)
    text_col = posts["text"]
    texts = _Texts(text_col)
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    langs, guessed, lang_source = post_languages(posts)

    # the narratives' posts, narrative by narrative and in post order within each; every
    # distinct text (after text_key) is one id
    member = np.flatnonzero(labels >= 0)
    order = member[np.argsort(labels[member], kind="stable")]
    sorted_labels = labels[order]
    bounds = [(int(np.searchsorted(sorted_labels, c, "left")),
               int(np.searchsorted(sorted_labels, c, "right"))) for c in ids]
    members = {c: order[s:e] for c, (s, e) in zip(ids, bounds)}
    kid, first_pos, empty, digests = _key_ids(text_col, order)
    # a text is analysed as its first post (narratives in order) has it: that post's text,
    # language and analyser
    first_post = order[first_pos]
    t1 = time.perf_counter()
    distinct, want_ids = _distinct_texts(kid, bounds, empty, cfg, _ranks(digests, seed))
    n_keys = len(first_pos)
    del kid, first_pos, digests
    needed = np.unique(np.concatenate([d.terms for d in distinct])) if ids else np.array([], int)
    keys = {int(k): text_key(texts[first_post[k]]) for k in needed}
    lang_at = {int(k): str(langs.iat[first_post[k]]) for k in needed}

    def analyser_of(k: int) -> str:
        return text_analyser(lang_at[k], guessed[first_post[k]])

    to_analyse = {keys[k]: (texts[first_post[k]], analyser_of(int(k))) for k in needed}
    want_entities = {keys[int(k)] for k in want_ids}
    t2 = time.perf_counter()
    found = analyse(dict(sorted(to_analyse.items())), want_entities, cfg, ahead, helper,
                    meanwhile)
    del to_analyse
    t3 = time.perf_counter()
    distinct_of = {c: [keys[k] for k in d.terms] for c, d in zip(ids, distinct)}
    posts_of = {c: {keys[k]: n for k, n in d.n_posts.items()} for c, d in zip(ids, distinct)}
    lang_of = {keys[k]: lang for k, lang in lang_at.items()}

    top = class_tfidf({c: [found[k].terms for k in distinct_of[c]] for c in ids},
                      cfg.n_terms) if ids else {}
    # per language: each language's posts of a narrative against the same language's posts
    # of the other narratives, so Urdu terms compete with Urdu terms
    by_lang: dict[str, dict[int, list[list[str]]]] = {}
    for c in ids:
        for k in distinct_of[c]:
            by_lang.setdefault(lang_of[k], {}).setdefault(c, []).append(found[k].terms)
    top_by_lang = {lang: class_tfidf(d, cfg.n_terms_per_language) for lang, d in by_lang.items()}
    t4 = time.perf_counter()
    log.debug("summarise: %d distinct texts in narratives, %d scored; keys %.1fs, samples "
              "%.1fs, analysis %.1fs, terms %.1fs", n_keys, len(needed), t1 - t0, t2 - t1,
              t3 - t2, t4 - t3)

    rows, details = [], []
    hashtags = _column(posts, "hashtags")
    domains = _domains(_column(posts, "url"), text_col.fillna("").astype(str))
    created = posts["created_at"]
    accounts = posts["account_id"]
    types = posts["account_type"].fillna("") if "account_type" in posts else None
    for c in ids:
        idx = members[c]
        examples = representative(idx, vectors, texts, cfg.n_examples)
        acc_counts = accounts.iloc[idx].value_counts()
        acc_counts = acc_counts.sort_index().sort_values(ascending=False, kind="stable")
        type_mix = ""
        if types is not None:
            tc = types.iloc[idx].replace("", "unknown").value_counts().sort_index()
            type_mix = " ".join(f"{t}:{n}" for t, n in tc.items())
        label = make_label(top[c], f"narrative {c}")
        first_at, last_at = created.iloc[idx].min(), created.iloc[idx].max()
        languages = _top(langs.iloc[idx], 10)
        entity_keys = [k for k in distinct_of[c] if k in want_entities]
        entities = _entities(entity_keys, posts_of[c], found, cfg.n_entities)
        per_lang = [{"lang": x["value"], "n_posts": x["n"],
                     "top_terms": top_by_lang.get(x["value"], {}).get(c, [])}
                    for x in languages if x["n"] >= cfg.min_language_posts]
        rows.append({
            "narrative_id": c,
            "label": label,
            "n_posts": len(idx),
            "n_accounts": int(acc_counts.size),
            "account_types": type_mix,
            "first_at": first_at,
            "last_at": last_at,
            "top_terms": "; ".join(top[c]),
            "example_post_id": posts["post_id"].iloc[examples[0]],
            "example_text": texts[examples[0]],
            "languages": " ".join(f"{x['value']}:{x['n']}" for x in languages),
            "entities": "; ".join(f"{x['text']} ({x['type']}) {x['n']}" for x in entities),
        })
        details.append({
            "narrative_id": c,
            "label": label,
            "top_terms": top[c],
            "entities": entities,
            "entity_posts_scanned": int(sum(posts_of[c][k] for k in entity_keys)),
            "examples": [{"post_id": posts["post_id"].iloc[i], "account_id": accounts.iloc[i],
                          "created_at": created.iloc[i].isoformat(), "text": texts[i]}
                         for i in examples],
            "top_accounts": [{"account_id": a, "n_posts": int(n)}
                             for a, n in acc_counts.head(cfg.n_accounts).items()],
            "top_hashtags": _top(hashtags.iloc[idx].str.split().explode(), cfg.n_terms),
            "top_domains": _top(domains.iloc[idx], cfg.n_terms),
            "languages": languages,
            "language_source": lang_source,
            "top_terms_by_language": per_lang,
            "posts_per_day": round(len(idx) / max(1.0, (last_at - first_at).total_seconds()
                                                  / 86400), 2),
        })
    columns = ["narrative_id", "label", "n_posts", "n_accounts", "account_types", "first_at",
               "last_at", "top_terms", "example_post_id", "example_text", "languages", "entities"]
    table = pd.DataFrame(rows, columns=columns)
    return Summary(table, details, int((labels < 0).sum()))
