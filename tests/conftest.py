"""Shared fixtures. No test may reach the network: every socket to a non-loopback address fails."""

from __future__ import annotations

import hashlib
import os
import socket

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class NetworkBlocked(RuntimeError):
    pass


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(sock: socket.socket, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    return host in ("localhost", "::1") or str(host).startswith("127.")


def _guarded_connect(self, address):
    if not _is_local(self, address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield


@pytest.fixture(autouse=True)
def models_in_tmp(monkeypatch, tmp_path):
    """`lockstep cluster` saves its narrative model under models/; in tests, a temporary one,
    never the repository's (which holds the install-time embedding models)."""
    from pipeline import cli

    monkeypatch.setattr(cli, "MODELS_DIR", tmp_path / "saved-models")
    yield


class HashingEmbedder:
    """A fast, deterministic stand-in for a sentence model: hashed bag of words, normalised.

    Texts that share words get similar vectors, which is enough to test the stages around the
    model without loading it. Counts calls so tests can prove what was (not) embedded.
    """

    model_id = "test/hashing-64"

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.n_embedded = 0
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        self.n_embedded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0
        out[:, 0] += 1e-3
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


class TopicEmbedder(HashingEmbedder):
    """HashingEmbedder over content words only (the summaries' tokenizer: no punctuation, no
    stop words) in 1,024 dimensions, so vectors follow topics the way a sentence model's do."""

    model_id = "test/topic-hashing-1024"

    def __init__(self):
        super().__init__(dim=1024)

    def embed(self, texts):
        from pipeline.narratives import tokens

        return super().embed([" ".join(tokens(t)) or "empty" for t in texts])


@pytest.fixture
def hashing_embedder():
    return HashingEmbedder()


@pytest.fixture(scope="session")
def built_models():
    """The embedding models `make install` derives (pipeline.build_models), built now if missing.

    Idempotent: a model already built from the installed package is only checked, not rebuilt.
    """
    from pipeline import build_models

    return {name: build_models.build(name) for name in build_models.ARTEFACTS}
