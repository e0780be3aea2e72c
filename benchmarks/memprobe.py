"""Where a process's resident memory is, at one moment: for finding what a long run still holds
between stages (`STAGE_STOP_MEMPROBE=FILE` in benchmarks/stage_stop.py writes one JSON line per
stage start).

Linux/glibc only. Each figure is in MB:

- ``rss``, ``rss_anon``, ``rss_file``: /proc/self/status (file pages are mapped files: libraries,
  memory-mapped arrays);
- ``smaps``: resident MB by mapping kind: the brk ``heap``, unnamed ``anon`` mappings (large
  mallocs, Python arenas, numba/LLVM code), shared ``lib`` files and other mapped ``file``s;
- ``malloc``: glibc ``mallinfo2``: bytes in use and free inside malloc's arenas (``free`` is
  fragmentation malloc_trim could not give back), and in its own mmapped chunks;
- ``pymalloc``: Python's small-object allocator: arenas held and bytes in live objects;
- ``arrow``: bytes allocated by Arrow's default memory pool;
- ``numpy``: bytes of numpy arrays that own their data and are reachable from Python containers
  the garbage collector tracks, with the largest few (shape, dtype and the type of one referrer).
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import tempfile

MB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return {"rss": out.get("VmRSS"), "hwm": out.get("VmHWM"), "rss_anon": out.get("RssAnon"),
            "rss_file": out.get("RssFile")}


def _smaps() -> dict:
    kinds: dict[str, float] = {}
    kind = "anon"
    with open("/proc/self/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=5)
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", first[0]):
                path = first[5].strip() if len(first) > 5 else ""
                kind = ("anon" if not path else "heap" if path == "[heap]" else
                        "stack" if path.startswith("[stack") else
                        "lib" if re.search(r"\.so(\.|$)", path) else
                        "special" if path.startswith("[") else "file")
            elif first[0] == "Rss:":
                kinds[kind] = kinds.get(kind, 0.0) + int(first[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}


def _malloc() -> dict:
    try:
        f = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    f.restype = _MallInfo2
    m = f()
    return {"arena": round(m.arena / MB, 1), "in_use": round(m.uordblks / MB, 1),
            "free": round(m.fordblks / MB, 1), "mmapped": round(m.hblkhd / MB, 1),
            "mmapped_chunks": m.hblks}


def _pymalloc() -> dict:
    """Parse sys._debugmallocstats() (it writes to the C stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()

    def grab(label: str) -> int | None:
        m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else None

    arenas = grab("# arenas allocated current")
    size = grab("# bytes in allocated blocks")
    # an arena is 1 MiB on 64-bit CPython 3.10 and later
    return {"arenas_mb": arenas, "in_objects": round((size or 0) / MB, 1)}


def _numpy(top: int = 8) -> dict:
    import numpy as np

    owners: dict[int, tuple] = {}
    for obj in gc.get_objects():
        for ref in gc.get_referents(obj):
            if not issubclass(type(ref), np.ndarray):  # type(): a dead weak proxy raises
                continue
            arr = ref
            while isinstance(arr.base, np.ndarray):
                arr = arr.base
            if arr.base is None and arr.flags.owndata and id(arr) not in owners:
                owners[id(arr)] = (arr.nbytes, f"{arr.shape} {arr.dtype}", type(obj).__name__)
    sizes = sorted(owners.values(), key=lambda t: -t[0])
    return {"total": round(sum(s[0] for s in sizes) / MB, 1), "arrays": len(sizes),
            "largest": [[round(s / MB, 1), what, holder] for s, what, holder in sizes[:top]]}


def probe() -> dict:
    out = {**_status(), "smaps": _smaps(), "malloc": _malloc(), "pymalloc": _pymalloc()}
    try:
        import pyarrow as pa

        out["arrow"] = round(pa.total_allocated_bytes() / MB, 1)
    except ImportError:
        pass
    if "numpy" in sys.modules:
        out["numpy"] = _numpy()
    out["gc_objects"] = len(gc.get_objects())
    return out
