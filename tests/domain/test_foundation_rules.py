"""Pure rules: canonical JSON, the audit hash chain, password and lockout rules, transitions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfg.domain import accounts
from mfg.domain.audit_chain import GENESIS_HASH, ChainEntry, ChainHead, next_times, verify_chain
from mfg.domain.canonical import canonical_json, content_hash, iso_utc
from mfg.domain.errors import InvalidTransition, ValidationFailed
from mfg.domain.signing import ROLE_FOR_MEANING, Meaning
from mfg.domain.status import SOP_STATUS

T0 = datetime(2026, 11, 26, 10, 15, tzinfo=timezone.utc)


def test_canonical_json_is_stable_and_explicit():
    a = {"b": 1, "a": [T0, "é"], "c": None}
    b = {"c": None, "a": [T0, "é"], "b": 1}
    assert canonical_json(a) == canonical_json(b) == '{"a":["2026-11-26T10:15:00.000000Z","é"],"b":1,"c":null}'
    assert content_hash(a) == content_hash(b)
    with pytest.raises(ValueError):
        canonical_json({"t": datetime(2026, 1, 1)})  # naive times are refused
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


_text = st.text()  # any Unicode text: quotes, backslashes, control characters, astral planes
_maybe = st.none() | _text
_aware = st.datetimes(timezones=st.timezones() | st.just(timezone.utc))


@given(seq=st.integers(1, 2**62), at=_aware, user_id=st.none() | st.integers(1, 2**62), username=_text,
       action=_text, entity_type=_maybe, entity_id=_maybe, before=_maybe, after=_maybe, reason=_maybe,
       prev_hash=_text)
def test_the_chain_text_is_exactly_the_canonical_json_of_the_entry(seq, at, user_id, username, action, entity_type,
                                                                    entity_id, before, after, reason, prev_hash):
    """The hash covers ``canonical_json(content())``; the fast template must give the same text, or the
    trails already written would stop verifying."""
    entry = ChainEntry(seq, at, user_id, username, action, entity_type, entity_id, before, after, reason, prev_hash)
    assert entry.canonical_text() == canonical_json(entry.content())


@given(_aware)
def test_iso_utc_is_the_strftime_form_in_utc(moment):
    assert iso_utc(moment) == moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _chain(n, seconds=None):
    entries, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        entry = ChainEntry(seq, T0 + timedelta(seconds=seq if seconds is None else seconds[seq - 1]), 1, "olivia",
                           "x.update", "x", str(seq), None, '{"v":%d}' % seq, None, prev)
        prev = entry.compute_hash()
        entries.append((entry, prev))
    return entries


def _head(entries, max_at=None, unordered_at=None):
    return ChainHead(len(entries), entries[-1][1], max_at or entries[-1][0].occurred_at, unordered_at)


def test_an_intact_chain_verifies():
    entries = _chain(5)
    result = verify_chain(entries, _head(entries))
    assert result.ok and result.checked == 5


def test_the_trails_times_follow_the_clock_back_and_forth():
    """The clock set back from 10 s to 5 s at entry 4: entries 4 to 7 are earlier than entry 3, and the
    latest of their times is 9 s (entry 6; entry 7's equal time moves nothing); the latest time is entry
    3's until entry 8 passes it."""
    seconds = [1, 2, 10, 5, 6, 9, 9, 11]
    times, state = [T0 + timedelta(seconds=s) for s in seconds], (None, None)
    for at in times:
        state = next_times(*state, at)
    assert state == (times[7], times[5])
    assert next_times(times[0], None, times[0]) == (times[0], None)
    entries = _chain(8, seconds)
    assert verify_chain(entries, _head(entries, unordered_at=times[5])).ok


def test_verify_catches_a_head_whose_times_do_not_match_the_trail():
    """The audit trail screen finds a date range by the head's record of the times: one cleared or
    moved (hiding that the clock went back) is a break."""
    seconds = [1, 2, 10, 5, 6]
    entries = _chain(5, seconds)
    at = [entry.occurred_at for entry, _ in entries]
    assert verify_chain(entries, _head(entries, at[2], at[4])).ok
    for wrong in (_head(entries, at[2], None), _head(entries, at[4], at[4]), _head(entries, at[2], at[3])):
        result = verify_chain(entries, wrong)
        assert not result.ok and "record of the trail's times" in result.problem, wrong


def test_each_kind_of_tampering_is_named():
    entries = _chain(5)
    altered = list(entries)
    altered[2] = (entries[2][0]._replace(after='{"v":99}'), entries[2][1])
    assert verify_chain(altered).bad_seq == 3
    deleted = entries[:2] + entries[3:]
    assert "missing" in verify_chain(deleted).problem
    rehashed = list(altered)
    rehashed[2] = (altered[2][0], altered[2][0].compute_hash())  # attacker recomputes the hash too
    result = verify_chain(rehashed)
    assert result.bad_seq == 4 and "does not link" in result.problem
    truncated = entries[:4]
    assert "removed" in verify_chain(truncated, _head(entries)).problem


def test_password_rules():
    assert accounts.password_problems("long-enough-secret", min_length=12) == []
    assert "at least 12" in accounts.password_problems("short", min_length=12)[0]
    assert accounts.password_problems("olivia-is-my-name", min_length=12, username="Olivia")
    assert accounts.password_problems(" padded-secret-x", min_length=12)


def test_lockout_idle_and_ageing_rules():
    assert not accounts.should_lock(4, 5) and accounts.should_lock(5, 5)
    assert not accounts.should_lock(100, 0)  # 0 disables lockout (a site's validated choice)
    assert accounts.is_idle(T0, T0 + timedelta(minutes=15, seconds=1), 15)
    assert not accounts.is_idle(T0, T0 + timedelta(minutes=15), 15)
    assert accounts.password_expired(T0, T0 + timedelta(days=181), 180)
    assert not accounts.password_expired(T0, T0 + timedelta(days=180), 180)


def test_roles_are_parsed_and_checked():
    assert accounts.parse_roles("qa, operator,qa") == ["operator", "qa"]
    with pytest.raises(ValidationFailed, match="unknown role"):
        accounts.parse_roles("qa,superuser")
    with pytest.raises(ValidationFailed, match="at least one"):
        accounts.parse_roles("")


def test_meanings_map_to_roles_and_admin_signs_nothing():
    assert set(ROLE_FOR_MEANING) == set(Meaning)
    assert all("admin" not in roles for roles in ROLE_FOR_MEANING.values())
    assert Meaning("verified").label == "Verified by"


def test_sop_transitions():
    SOP_STATUS.check("draft", "effective")
    SOP_STATUS.check("effective", "superseded")
    for current, target in [("draft", "superseded"), ("superseded", "effective"), ("effective", "draft")]:
        with pytest.raises(InvalidTransition, match=f"from '{current}'"):
            SOP_STATUS.check(current, target)
