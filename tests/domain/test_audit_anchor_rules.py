"""Anchors of the audit trail and the walk from a verified position, as pure functions (domain/audit_chain.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mfg.domain.audit_chain import (
    GENESIS_HASH,
    ChainEntry,
    ChainHead,
    HeadSeal,
    KeyRing,
    anchor_document,
    anchor_from_document,
    anchor_seal_problem,
    next_times,
    seal_anchor,
    seal_head,
    seal_problem,
    verify_chain,
)

KEY = b"k" * 32
RING = KeyRing((("k1", KEY),))
AT = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


def _trail(n: int) -> tuple[list[tuple[ChainEntry, str]], list[ChainHead]]:
    """``n`` entries, one time going back (entry 4), and the head after each (heads[i]: after i entries)."""
    entries, heads, prev, max_at, unordered_at = [], [ChainHead(0, GENESIS_HASH, None, None)], GENESIS_HASH, None, None
    for seq in range(1, n + 1):
        at = AT + timedelta(seconds=seq if seq != 4 else -10)
        entry = ChainEntry(seq, at, None, "ann", "test.event", None, None, None, f'{{"n":{seq}}}', None, prev)
        prev = entry.compute_hash()
        max_at, unordered_at = next_times(max_at, unordered_at, at)
        entries.append((entry, prev))
        heads.append(ChainHead(seq, prev, max_at, unordered_at))
    return entries, heads


def test_a_walk_from_a_verified_position_checks_only_what_follows_and_the_head_as_a_full_walk():
    entries, heads = _trail(10)
    head = heads[10]
    seal = (RING, HeadSeal("k1", seal_head(KEY, "k1", head)))
    assert verify_chain(entries, head, seal).checked == 10
    for at in (0, 3, 4, 9, 10):
        result = verify_chain(entries[at:], head, seal, start=heads[at])
        assert result.ok and result.checked == 10 - at, (at, result)
    # a start that is not the trail's: the first entry after it does not link to it, or the times differ
    assert "entry 6 does not link to entry 5" in verify_chain(entries[5:], head, seal,
                                                              start=heads[5]._replace(entry_hash="ab" * 32)).problem
    assert "record of the trail's times" in verify_chain(entries[5:], head, seal,
                                                         start=heads[5]._replace(unordered_at=None)).problem
    # what follows is checked exactly as in a full walk
    assert "entry 8 is missing" in verify_chain(entries[5:7] + entries[8:], head, seal, start=heads[5]).problem
    assert "seal does not match" in verify_chain(entries[5:], head, (RING, HeadSeal("k1", "0" * 64)),
                                                 start=heads[5]).problem
    assert verify_chain(entries[5:9], head, seal, start=heads[5]).bad_seq == 10  # the tail cut


def test_an_anchor_seal_is_never_a_head_seal_nor_the_reverse():
    head = _trail(3)[1][3]
    anchor = seal_anchor(KEY, "k1", head)
    assert anchor.head == head and anchor_seal_problem(RING, anchor) is None
    assert "does not match" in seal_problem(RING, head, HeadSeal("k1", anchor.seal))
    assert "does not match its seal" in anchor_seal_problem(RING, anchor._replace(seal=seal_head(KEY, "k1", head)))
    for changed in (anchor._replace(seq=2), anchor._replace(entry_hash="ab" * 32), anchor._replace(max_at=None)):
        assert "does not match its seal" in anchor_seal_problem(RING, changed)
    assert "not in this instance's" in anchor_seal_problem(RING, anchor._replace(key_id="k9"))


def test_an_anchor_file_document_round_trips_and_refuses_what_is_not_one():
    _entries, heads = _trail(5)
    anchor = seal_anchor(KEY, "k1", heads[5])  # unordered_at set: entry 4 went back in time
    document = anchor_document(anchor, created_at=AT, site="Site A")
    assert document["format"] == "mfg-audit-anchor" and document["max_at"] == "2026-12-06T09:00:05.000000Z"
    assert anchor_from_document(document) == anchor
    for bad in ({**document, "format": "other"}, {**document, "version": 2}, {**document, "seq": "5"},
                {**document, "seal": ""}, {**document, "max_at": "2026-12-06 09:00"}, ["not", "a", "dict"]):
        with pytest.raises(ValueError):
            anchor_from_document(bad)
