"""Pseudonymised exports: account ids replaced by a keyed HMAC, the key never written anywhere.

The key comes from the environment variable LOCKSTEP_PSEUDONYM_KEY or from a key file. The same
key gives the same pseudonym for an account in every run, so analysts can join exports across
runs without ever seeing, or shipping, the real handles."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pandas as pd

from .errors import ConfigError

KEY_ENV = "LOCKSTEP_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16


def load_key(key_file: Path | None = None) -> bytes:
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"--key-file {key_file}: cannot read it ({exc.strerror}); pass a "
                              "readable file holding the pseudonymisation key") from None
    else:
        key = os.environ.get(KEY_ENV, "").encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"--pseudonymise needs a secret key of at least {MIN_KEY_BYTES} bytes: set "
            f"{KEY_ENV} or pass --key-file FILE (for example: head -c 32 /dev/urandom | "
            "base64 > lockstep.key)")
    return key


def pseudonym(key: bytes, account_id: str) -> str:
    digest = hmac.new(key, str(account_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return f"acct_{digest[:20]}"


def pseudonymise_escalation(esc, key: bytes):
    """A copy of an Escalation with every account id (and name) replaced by its pseudonym."""
    from .escalate import Escalation

    def one(a: object) -> object:
        return pseudonym(key, a) if isinstance(a, str) and a else a

    def many(s: object, sep: str = ";") -> object:
        return sep.join(one(a) for a in s.split(sep)) if isinstance(s, str) and s else s

    acc = esc.accounts.copy()
    acc["account_id"] = acc["account_id"].map(one)
    acc["account_name"] = acc["account_id"]  # names identify as well as ids do
    acc["partners"] = acc["partners"].map(many)
    acc["evidence"] = acc["evidence"].map(
        lambda ev: [{**e, "partner_account_id": one(e.get("partner_account_id"))} for e in ev]
        if isinstance(ev, list) else ev)
    nets = esc.networks.copy()
    nets["accounts"] = nets["accounts"].map(many)
    g = esc.graph.copy()
    if g.vcount():
        g.vs["account_id"] = [one(a) for a in g.vs["account_id"]]
        g.vs["account_name"] = list(g.vs["account_id"])
        if "label" in g.vs.attributes():
            g.vs["label"] = list(g.vs["account_id"])
        if "id" in g.vs.attributes():
            del g.vs["id"]
    return Escalation(acc, nets, g)


def pseudonymise_frame(df: pd.DataFrame, key: bytes, columns: tuple[str, ...]) -> pd.DataFrame:
    out = df.copy()
    for c in columns:
        if c in out:
            out[c] = out[c].map(lambda a: pseudonym(key, a) if isinstance(a, str) and a else a)
    return out
