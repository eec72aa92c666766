"""The audit head's seal and key ring, as pure functions (domain/audit_chain.py)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone

import pytest

from mfg.domain.audit_chain import (
    GENESIS_HASH,
    HEAD_SEAL_PREFIX,
    ChainHead,
    HeadSeal,
    KeyRing,
    head_seal_text,
    seal_head,
    seal_problem,
)

OLD, NEW = b"o" * 32, b"n" * 32
RING = KeyRing((("k1", OLD), ("k2", NEW)))
HEAD = ChainHead(7, "ab" * 32, datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc), None)


def test_the_seal_is_an_hmac_of_a_domain_separated_text_of_every_head_field():
    text = head_seal_text("k2", HEAD)
    assert text.splitlines() == [HEAD_SEAL_PREFIX, "k2", "7", "ab" * 32, "2026-12-06T09:00:00.000000Z", "none"]
    assert seal_head(NEW, "k2", HEAD) == hmac.new(NEW, text.encode(), hashlib.sha256).hexdigest()
    for changed in (HEAD._replace(seq=8), HEAD._replace(entry_hash="cd" * 32), HEAD._replace(max_at=None),
                    HEAD._replace(unordered_at=HEAD.max_at)):
        assert seal_head(NEW, "k2", changed) != seal_head(NEW, "k2", HEAD)
    assert seal_head(NEW, "k1", HEAD) != seal_head(NEW, "k2", HEAD)  # the key id is sealed too


def test_a_seal_verifies_under_any_key_of_the_ring_that_made_it():
    assert seal_problem(RING, HEAD, HeadSeal("k1", seal_head(OLD, "k1", HEAD))) is None
    assert seal_problem(RING, HEAD, HeadSeal("k2", seal_head(NEW, "k2", HEAD))) is None
    assert "does not match" in seal_problem(RING, HEAD, HeadSeal("k2", seal_head(OLD, "k2", HEAD)))
    assert "not in this instance" in seal_problem(RING, HEAD, HeadSeal("k3", seal_head(NEW, "k3", HEAD)))
    assert "not sealed" in seal_problem(RING, HEAD, HeadSeal(None, None))
    assert "does not match" in seal_problem(RING, ChainHead(0, GENESIS_HASH, None, None),
                                            HeadSeal("k2", seal_head(NEW, "k2", HEAD)))


def test_the_key_ring_file_format():
    ring = KeyRing.parse("# comment\n\n" + KeyRing.line("k1", OLD) + KeyRing.line("k2", NEW))
    assert ring == RING and ring.current == ("k2", NEW) and ring.get("k1") == OLD and ring.get("x") is None
    for bad in ("", "# only a comment\n", "k1\n", f"k1 {OLD.hex()} extra\n", "k1 not-hex\n",
                f"k1 {b'short'.hex()}\n", f"k1 {OLD.hex()}\nk1 {NEW.hex()}\n", f"k/1 {OLD.hex()}\n"):
        with pytest.raises(ValueError):
            KeyRing.parse(bad)
