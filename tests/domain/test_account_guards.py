"""The rules that separate administration from signing (issue 19 item 1), pure: each lives in one guard."""

from __future__ import annotations

import pytest

from mfg.domain import guards
from mfg.domain.accounts import SIGNING_ROLES, combination_problems
from mfg.domain.signing import ROLE_FOR_MEANING, Meaning


def _person(pid: int, *roles: str) -> guards.Person:
    return guards.Person(pid, frozenset(roles), f"Person {pid}")


@pytest.mark.parametrize("role", SIGNING_ROLES)
def test_admin_is_never_combined_with_a_signing_role(role):
    assert combination_problems(["admin", role])
    assert combination_problems([role]) == [] and combination_problems(["admin"]) == []


def test_no_one_edits_their_own_account():
    admin = _person(1, "admin")
    assert [r.kind for r in guards.edit_account(admin, target_id=1)] == ["duty"]
    assert guards.edit_account(admin, target_id=2) == []
    assert [r.kind for r in guards.edit_account(_person(3, "qa"), target_id=2)] == ["role"]


def test_a_grant_is_confirmed_by_a_second_admin_or_qa_neither_requester_nor_target():
    def confirm(actor, target_id=5, requested_by_id=1, pending=True, roles_after=("operator",)):
        return guards.texts(guards.confirm_role_grant(actor, target_id=target_id, requested_by_id=requested_by_id,
                                                      pending=pending, roles_after=roles_after))

    assert confirm(_person(2, "admin")) == [] and confirm(_person(3, "qa")) == []
    assert confirm(_person(1, "admin")) == ["You asked for this role: a second administrator or QA confirms it."]
    assert "confirmed by someone else" in confirm(_person(5, "qa"))[0]
    assert confirm(_person(4, "operator")) == ["confirming a role grant needs the admin or QA role"]
    assert confirm(_person(2, "admin"), pending=False) == ["this role grant is no longer pending"]
    assert "cannot be combined" in confirm(_person(2, "admin"), roles_after=("admin", "operator"))[0]


def test_signing_needs_the_role_no_admin_role_and_an_own_password():
    roles = ROLE_FOR_MEANING[Meaning.APPROVED]

    def sign(person, own_password=True):
        return guards.texts(guards.sign(person, roles=roles, what="Approved by", own_password=own_password))

    assert sign(_person(1, "qa")) == []
    assert sign(_person(1, "qa", "admin")) == ["An administrator signs nothing: this account holds the admin role."]
    assert sign(_person(1, "operator")) == ["signing as 'Approved by' needs the qa or clinical role"]
    assert sign(_person(1, "qa"), own_password=False) == [
        "Your password was set by an administrator: change it (Change password) before you sign."]
