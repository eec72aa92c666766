"""WTForms classes for the screens. They check shape only; the services enforce the rules."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import DateField, PasswordField, SelectField, SelectMultipleField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..domain.accounts import ROLE_LABELS
from ..services.clinical import ABO_RH
from ..services.clinical import RESULTS as DONOR_RESULTS


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[DataRequired()],
                             render_kw={"autocomplete": "current-password"})
    submit = SubmitField("Sign in")


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()],
                            render_kw={"autocomplete": "current-password"})
    new = PasswordField("New password", validators=[DataRequired()], render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat the new password",
                            validators=[DataRequired(), EqualTo("new", message="The two new passwords differ.")],
                            render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Change password")


class SignForm(FlaskForm):
    """The signing dialog: the password always, the user name on the first signature of a session."""

    username = StringField("User name", validators=[Optional(), Length(max=64)],
                           render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired(message="Re-enter your password to sign.")],
                             render_kw={"autocomplete": "current-password"})
    comment = TextAreaField("Comment (optional)", validators=[Optional(), Length(max=2000)])
    submit = SubmitField("Sign")


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _role_choices() -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in ROLE_LABELS.items()]


class AtLeastOne(DataRequired):
    """Like DataRequired for a checkbox group, without putting ``required`` on every box."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.field_flags: dict[str, bool] = {}


class UserCreateForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    full_name = StringField("Full (printed) name", validators=[DataRequired(), Length(max=200)])
    roles = MultiCheckboxField("Roles", choices=_role_choices(), validators=[AtLeastOne("Pick at least one role.")])
    password = PasswordField("Temporary password", validators=[DataRequired()],
                             render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Create user")


class UserEditForm(FlaskForm):
    full_name = StringField("Full (printed) name", validators=[DataRequired(), Length(max=200)])
    roles = MultiCheckboxField("Roles", choices=_role_choices(), validators=[AtLeastOne("Pick at least one role.")])
    reason = StringField("Reason for the change", validators=[DataRequired(), Length(max=500)])
    submit = SubmitField("Save")


class ReasonForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(), Length(max=500)])
    submit = SubmitField("Confirm")


class ResetPasswordForm(FlaskForm):
    password = PasswordField("Temporary password", validators=[DataRequired()],
                             render_kw={"autocomplete": "new-password"})
    reason = StringField("Reason", validators=[DataRequired(), Length(max=500)])
    submit = SubmitField("Set temporary password")


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    username = StringField("User", validators=[Optional(), Length(max=200)])
    action = SelectField("What", choices=[], validate_choice=False, validators=[Optional(), Length(max=60)])
    entity_type = StringField("Record type", validators=[Optional(), Length(max=60)])
    entity_id = StringField("Record id", validators=[Optional(), Length(max=60)])
    since = DateField("From (site date)", validators=[Optional()])
    until = DateField("To (site date, inclusive)", validators=[Optional()])


class ConfirmForm(FlaskForm):
    """A button that only needs the CSRF token."""

    submit = SubmitField("Confirm")




class EquipmentForm(FlaskForm):
    identifier = StringField("Identifier", validators=[DataRequired(), Length(max=60)])
    equipment_type = StringField("Type", validators=[DataRequired(), Length(max=100)])
    description = StringField("Description", validators=[Optional(), Length(max=200)])
    calibration_due = DateField("Calibration due", validators=[Optional()])
    submit = SubmitField("Register equipment")


class MaterialLotForm(FlaskForm):
    material = StringField("Material", validators=[DataRequired(), Length(max=100)])
    lot_number = StringField("Lot number", validators=[DataRequired(), Length(max=60)])
    expiry = DateField("Expiry", validators=[DataRequired()])
    qc_status = SelectField("QC status", choices=[SelectChoice(s, s) for s in ("quarantine", "released", "rejected")])
    submit = SubmitField("Receive lot")


class EquipmentStatusForm(FlaskForm):
    status = SelectField("Status", choices=[SelectChoice(s, s.replace("_", " "))
                                            for s in ("in_service", "out_of_service", "retired")])
    calibration_due = DateField("Calibration due", validators=[Optional()])
    reason = StringField("Reason", validators=[DataRequired(), Length(max=500)])


class LotStatusForm(FlaskForm):
    qc_status = SelectField("QC status", choices=[SelectChoice(s, s) for s in ("quarantine", "released", "rejected")])
    reason = StringField("Reason", validators=[DataRequired(), Length(max=500)])


# No list starts on an answer: the first choice is an explicit empty one, which the form refuses (the person
# chooses; an untouched result is never taken as negative, nor a determination as eligible).
CHOOSE = SelectChoice("", "choose…")


def _choices(values: tuple[str, ...]) -> list[SelectChoice]:
    return [CHOOSE] + [SelectChoice(v, v) for v in values]


class DonorForm(FlaskForm):
    code = StringField("Donor code", validators=[DataRequired(), Length(max=40)])
    abo_rh = SelectField("ABO/Rh", choices=_choices(ABO_RH), validators=[DataRequired("Choose the ABO/Rh group.")])


class DonorTestForm(FlaskForm):
    test = StringField("Test", validators=[DataRequired(), Length(max=60)])
    result = SelectField("Result", choices=_choices(DONOR_RESULTS), validators=[DataRequired("Choose the result.")])
    specimen_date = DateField("Specimen drawn on", validators=[DataRequired()])


def donor_panel_form(tests: tuple[str, ...], **kwargs: Any) -> FlaskForm:
    """The donor's whole panel in one form: a result list per test (named ``result_<n>``), one specimen date."""

    class DonorPanelForm(FlaskForm):
        specimen_date = DateField("Specimen drawn on",
                                  validators=[DataRequired("Enter the date the specimen was drawn.")])

    for n, test in enumerate(tests):
        setattr(DonorPanelForm, f"result_{n}", SelectField(test, choices=_choices(DONOR_RESULTS), validators=[
            DataRequired(f"Choose the result of {test}.")]))
    return DonorPanelForm(**kwargs)


class EligibilityForm(FlaskForm):
    eligible = SelectField("Determination", choices=_choices(("eligible", "ineligible")),
                           validators=[DataRequired("Choose the determination.")])
    summary = StringField("Summary of records", validators=[DataRequired(), Length(max=2000)])


class SubjectForm(FlaskForm):
    code = StringField("Subject code", validators=[DataRequired(), Length(max=40)])
    donor_id = SelectField("Donor", coerce=int, choices=[])
    weight_kg = StringField("Weight (kg)", validators=[DataRequired(), Length(max=10)],
                            render_kw={"inputmode": "decimal", "autocomplete": "off"})
    measured_on = DateField("Weighed on", validators=[DataRequired()])
