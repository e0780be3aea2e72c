"""Which files make up a corpus, its content hash, and how each text file is decoded."""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path

from ..errors import ConfigError, InputError

# file suffix -> format name
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
ACCOUNTS_STEM = "accounts"

_BOMS = (  # longest first: the UTF-32 LE BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def format_of(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def _ignored(rel: Path) -> bool:
    # hidden files and folders, editor and office lock files
    return any(part.startswith((".", "~$")) for part in rel.parts)


def list_files(corpus: Path) -> tuple[list[Path], Path | None]:
    """The posts files (sorted by relative path) and the accounts file (or None) of a corpus.

    A corpus is a folder or a single posts file. In a folder every .csv/.tsv/.jsonl/.ndjson/.parquet
    file is a posts file, except the one named ``accounts.<ext>``; other files are ignored.
    """
    corpus = Path(corpus)
    supported = ", ".join(FORMATS)
    if not corpus.exists():
        raise InputError(f"corpus {corpus} does not exist; pass a folder or a posts file "
                         f"({supported})")
    if corpus.is_file():
        if format_of(corpus) is None:
            raise InputError(f"corpus {corpus} is not a supported posts file; expected one of "
                             f"{supported} (or a folder of them)")
        return [corpus], None

    posts: list[Path] = []
    accounts: list[Path] = []
    others: list[str] = []
    for path in sorted(corpus.rglob("*"), key=lambda p: p.relative_to(corpus).as_posix()):
        rel = path.relative_to(corpus)
        if not path.is_file() or _ignored(rel):
            continue
        if format_of(path) is None:
            others.append(rel.as_posix())
        elif path.stem.lower() == ACCOUNTS_STEM:
            accounts.append(path)
        else:
            posts.append(path)
    if len(accounts) > 1:
        names = ", ".join(p.relative_to(corpus).as_posix() for p in accounts)
        raise InputError(f"corpus {corpus} has {len(accounts)} accounts files ({names}); "
                         "keep one, or rename the others")
    if not posts:
        found = ", ".join(others[:20]) + (f", ... ({len(others) - 20} more)"
                                           if len(others) > 20 else "")
        raise InputError(f"corpus {corpus} has no posts file; expected {supported} files "
                         f"(found: {found or 'nothing'})")
    return posts, (accounts[0] if accounts else None)


def relative_name(path: Path, corpus: Path) -> str:
    """How a file is named in rejects and stats: relative to the corpus folder."""
    corpus = Path(corpus)
    if corpus.is_file():
        return path.name
    return path.relative_to(corpus).as_posix()


def input_hash(corpus: Path) -> str:
    """sha256 over the files ingest reads: relative path, size and bytes of each, sorted."""
    corpus = Path(corpus)
    posts, accounts = list_files(corpus)
    files = sorted([*posts, *([accounts] if accounts else [])],
                   key=lambda p: relative_name(p, corpus))
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{relative_name(path, corpus)}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


# -- decoding ------------------------------------------------------------------------------


def choose_encoding(path: Path, name: str, setting: str) -> str:
    """The codec for ``path``: the BOM's, else strict UTF-8 (auto), or the one configured."""
    if setting != "auto":
        try:
            return codecs.lookup(setting).name
        except LookupError:
            raise ConfigError(f"ingest.encoding ({setting!r}) is not a codec Python knows; "
                              "use auto or a codec name such as utf-8, cp1252, latin-1, "
                              "utf-16") from None
    with open(path, "rb") as fh:
        head = fh.read(4096)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    # UTF-16 without a BOM is valid UTF-8 full of NUL bytes: catch it before it turns into
    # mangled column names.
    if len(head) >= 8 and head.count(0) > len(head) // 4:
        order = "le" if head[1::2].count(0) > head[0::2].count(0) else "be"
        raise InputError(f"{name} looks like UTF-16 without a byte-order mark (many NUL bytes); "
                         f"set --set ingest.encoding=utf-16-{order}, or re-save it as UTF-8")
    return "utf-8"


def decode_error(path: Path, name: str, codec: str, setting: str) -> InputError:
    """An InputError for a file that does not decode: where, which byte, a guess and the fix."""
    where = _locate(path, codec)
    if where is None:  # cannot happen for a file that raised, but never hide the original
        return InputError(f"{name} cannot be decoded as {codec}; set ingest.encoding to the "
                          "file's encoding or re-save it as UTF-8")
    offset, line, bad = where
    guess = _guess(path, offset)
    expected = "valid UTF-8" if setting == "auto" else f"valid {codec}"
    guess_text = (f"charset-normalizer guesses {guess}" if guess
                  else "charset-normalizer could not guess the encoding")
    fix = f"--set ingest.encoding={guess or 'cp1252'}"
    if guess and guess != "cp1252":
        fix += " (or cp1252, the usual encoding of Windows exports)"
    return InputError(
        f"{name} is not {expected}: byte {bad.hex(' ').upper() or '?'} at byte offset "
        f"{offset:,} (line {line:,}) cannot be decoded; {guess_text}. Fix: {fix}, or re-save "
        "the file as UTF-8"
    )


def _locate(path: Path, codec: str) -> tuple[int, int, bytes] | None:
    decoder = codecs.getincrementaldecoder(codec)("strict")
    offset, line = 0, 1
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            final = not block
            try:
                text = decoder.decode(block, final)
            except UnicodeDecodeError as exc:
                carried = len(exc.object) - len(block)  # bytes held over from the last block
                before = exc.object[: exc.start]
                line += codecs.decode(before, codec, "replace").count("\n")
                return offset - carried + exc.start, line, exc.object[exc.start: exc.end][:4]
            line += text.count("\n")
            offset += len(block)
            if final:
                return None


def _guess(path: Path, offset: int) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - it is a dependency
        return None
    with open(path, "rb") as fh:
        sample = fh.read(256 * 1024)
        if offset > len(sample):
            fh.seek(max(0, offset - 64 * 1024))
            sample += fh.read(128 * 1024)
    best = from_bytes(sample).best()
    if best is None or best.encoding in ("utf_8", "ascii"):
        return None
    return codecs.lookup(best.encoding).name
