"""User administration (administrator role). Every action needs a reason and is audited."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from ..domain import guards
from ..domain.errors import DomainError
from ..extensions import db
from ..services import accounts
from .forms import ReasonForm, ResetPasswordForm, UserCreateForm, UserEditForm
from .security import policy, roles_required, transaction

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/users")
@roles_required("admin")
def users():
    return render_template("admin/users.html", users=accounts.list_users(db.session))


@bp.route("/users/new", methods=["GET", "POST"])
@roles_required("admin")
def create_user():
    form = UserCreateForm()
    if form.validate_on_submit():
        try:
            with transaction():
                user = accounts.create_user(db.session, username=form.username.data,
                                            full_name=form.full_name.data, roles=form.roles.data,
                                            password=form.password.data, policy=policy(), temporary=True)
        except DomainError as exc:
            form.form_errors.extend(exc.problems)
        else:
            flash(f"User {user.username} created with a temporary password{_pending_note(user)}.", "success")
            return redirect(url_for("admin.user", user_id=user.id))
    return render_template("admin/user_new.html", form=form, min_length=policy().min_length)


def _pending_note(user) -> str:  # noqa: ANN001 - a User
    pending = [g.role for g in accounts.pending_grants(db.session, user)]
    return f"; pending a second person's confirmation: {', '.join(pending)}" if pending else ""


def _forms(user):
    # the roles the account holds or was granted pending confirmation: saving the form unchanged keeps both
    roles = user.role_list + [g.role for g in accounts.pending_grants(db.session, user)]
    edit = UserEditForm(prefix="edit", data={"full_name": user.full_name, "roles": roles})
    return {"edit": edit, "reset": ResetPasswordForm(prefix="reset"), "unlock": ReasonForm(prefix="unlock"),
            "deactivate": ReasonForm(prefix="deactivate"), "reactivate": ReasonForm(prefix="reactivate")}


@bp.route("/users/<int:user_id>", methods=["GET"])
@roles_required("admin")
def user(user_id: int):
    target = accounts.get(db.session, user_id)
    return render_template("admin/user.html", user=target, forms=_forms(target),
                           pending=accounts.pending_grants(db.session, target))


@bp.route("/users/<int:user_id>/<action>", methods=["POST"])
@login_required
def user_action(user_id: int, action: str):
    target = accounts.get(db.session, user_id)
    forms = _forms(target)
    form = forms.get(action)
    if form is None:
        return redirect(url_for("admin.user", user_id=user_id))
    if form.validate_on_submit():
        try:
            with transaction():
                session = db.session
                if action == "edit":
                    accounts.set_roles(session, target, roles=form.roles.data, full_name=form.full_name.data,
                                       reason=form.reason.data, policy=policy())
                elif action == "reset":
                    accounts.reset_password(session, target, temporary_password=form.password.data,
                                            policy=policy(), reason=form.reason.data)
                elif action == "unlock":
                    accounts.unlock(session, target, reason=form.reason.data)
                elif action == "deactivate":
                    accounts.deactivate(session, target, reason=form.reason.data, acting_user_id=current_user.id)
                else:
                    accounts.reactivate(session, target, reason=form.reason.data)
        except DomainError as exc:
            form.form_errors.extend(exc.problems)
        else:
            flash(f"{target.username}: {action} done{_pending_note(target) if action == 'edit' else ''}.", "success")
            return redirect(url_for("admin.user", user_id=user_id))
    return render_template("admin/user.html", user=target, forms=forms,
                           pending=accounts.pending_grants(db.session, target)), 400


@bp.route("/grants")
@roles_required(guards.ADMIN, guards.QA)
def grants():
    """Signing roles granted by an administrator, waiting for a second person (the two-person rule)."""
    return render_template("admin/grants.html", grants=accounts.pending_grants(db.session))


@bp.route("/grants/<int:grant_id>/confirm", methods=["POST"])
@login_required
def confirm_grant(grant_id: int):
    grant = accounts.get_grant(db.session, grant_id)
    try:
        with transaction():
            accounts.confirm_grant(db.session, grant, by=current_user._get_current_object())
    except DomainError as exc:
        for problem in exc.problems:
            flash(problem, "error")
        return render_template("admin/grants.html", grants=accounts.pending_grants(db.session)), 400
    flash(f"{grant.user.username}: role {grant.role} confirmed.", "success")
    return redirect(url_for("admin.grants"))
