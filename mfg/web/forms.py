"""WTForms classes for the screens. They check shape only; the services enforce the rules.

Every form derives from :class:`PolicyForm` (or mixes in :class:`InputPolicy`): each of its text, date and
number fields is checked by the input rule of :mod:`mfg.domain.inputs` named like the field (or as the
form's ``input_rules`` maps it), so a new field gets the policy, or a test fails because it names no rule.
No length is restated here: the rule's limit is the field's ``maxlength`` and its message.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    DecimalField,
    Field,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.csrf.core import CSRFTokenField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from ..domain import inputs
from ..domain.accounts import ROLE_LABELS
from ..domain.eligibility import ScreeningEntry
from ..domain.errors import ValidationFailed
from ..domain.trial_config import SubjectEligibility
from ..services.clinical import ABO_RH
from ..services.clinical import RESULTS as DONOR_RESULTS


class PolicyCheck:
    """The validator a :class:`InputPolicy` form adds to a field: the domain rule, its message as the field's
    error; a text is replaced by its cleaned form (NFC, trimmed)."""

    def __init__(self, rule: inputs.Rule) -> None:
        self.rule = rule

    def __call__(self, form: Any, field: Field) -> None:
        if field.data is None or field.data == "":
            return  # required or not: the field's own validators say
        # a date as typed: WTForms' parser takes other scripts' digits (strptime), the rule takes ASCII only
        value = field.raw_data[0] if isinstance(self.rule, inputs.DateRange) and field.raw_data else field.data
        try:
            cleaned = self.rule.clean(value, today=date.today())
        except ValidationFailed as exc:
            raise ValidationError("; ".join(exc.problems)) from None
        if isinstance(cleaned, str):
            field.data = cleaned


# Fields that carry what a person types; passwords are secrets, never stored as typed, and keep every
# character (only the request's NUL guard applies to them).
_TYPED = (StringField, DateField, DecimalField, IntegerField)
_EXEMPT = (PasswordField, CSRFTokenField)


class InputPolicy:
    """Mixin of every form: the input policy of :mod:`mfg.domain.inputs` on every typed field."""

    input_rules: ClassVar[dict[str, str]] = {}
    """Field name -> rule name, where the field's name is not its rule's name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self._fields.items():  # type: ignore[attr-defined]
            rule = self.input_rule(name, field)
            if rule is None:
                continue
            field.validators = [*field.validators, PolicyCheck(rule)]
            limit = getattr(rule, "max_length", None)
            if limit is not None:
                field.flags.maxlength = limit

    def input_rule(self, name: str, field: Field) -> inputs.Rule | None:
        """The rule of field ``name``; ``None`` for a field nobody types into (a button, a tick box, a list
        whose choices are checked, a password). A typed field with no rule is a ``KeyError``."""
        if isinstance(field, _EXEMPT) or not self.is_typed(field):
            return None
        return inputs.rule(self.input_rules.get(name, name))

    @staticmethod
    def is_typed(field: Field) -> bool:
        """Whether a person types ``field``'s value (a list whose choice is not checked counts as typed)."""
        return isinstance(field, _TYPED) or (isinstance(field, SelectField) and not field.validate_choice)


class PolicyForm(InputPolicy, FlaskForm):
    """The base of every screen's form."""


class LoginForm(PolicyForm):
    username = StringField("User name", validators=[DataRequired()],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[DataRequired()],
                             render_kw={"autocomplete": "current-password"})
    submit = SubmitField("Sign in")


class ChangePasswordForm(PolicyForm):
    current = PasswordField("Current password", validators=[DataRequired()],
                            render_kw={"autocomplete": "current-password"})
    new = PasswordField("New password", validators=[DataRequired()], render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat the new password",
                            validators=[DataRequired(), EqualTo("new", message="The two new passwords differ.")],
                            render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Change password")


class SignForm(PolicyForm):
    """The signing dialog: the password always, the user name on the first signature of a session."""

    username = StringField("User name", validators=[Optional()],
                           render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired(message="Re-enter your password to sign.")],
                             render_kw={"autocomplete": "current-password"})
    comment = TextAreaField("Comment (optional)", validators=[Optional()])
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


class UserCreateForm(PolicyForm):
    username = StringField("User name", validators=[DataRequired()])
    full_name = StringField("Full (printed) name", validators=[DataRequired()])
    roles = MultiCheckboxField("Roles", choices=_role_choices(), validators=[AtLeastOne("Pick at least one role.")])
    password = PasswordField("Temporary password", validators=[DataRequired()],
                             render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Create user")


class UserEditForm(PolicyForm):
    full_name = StringField("Full (printed) name", validators=[DataRequired()])
    roles = MultiCheckboxField("Roles", choices=_role_choices(), validators=[AtLeastOne("Pick at least one role.")])
    reason = StringField("Reason for the change", validators=[DataRequired()])
    submit = SubmitField("Save")


class ReasonForm(PolicyForm):
    reason = StringField("Reason", validators=[DataRequired()])
    submit = SubmitField("Confirm")


class ResetPasswordForm(PolicyForm):
    password = PasswordField("Temporary password", validators=[DataRequired()],
                             render_kw={"autocomplete": "new-password"})
    reason = StringField("Reason", validators=[DataRequired()])
    submit = SubmitField("Set temporary password")


class AuditFilterForm(PolicyForm):
    class Meta:
        csrf = False  # a GET search form changes nothing

    input_rules = {"username": "search", "action": "search", "entity_type": "record_type", "entity_id": "record_id"}

    username = StringField("User", validators=[Optional()])
    action = SelectField("What", choices=[], validate_choice=False, validators=[Optional()])
    entity_type = StringField("Record type", validators=[Optional()])
    entity_id = StringField("Record id", validators=[Optional()])
    since = DateField("From (site date)", validators=[Optional()])
    until = DateField("To (site date, inclusive)", validators=[Optional()])


class ConfirmForm(PolicyForm):
    """A button that only needs the CSRF token."""

    submit = SubmitField("Confirm")


class EquipmentForm(PolicyForm):
    input_rules = {"description": "equipment_description"}
    identifier = StringField("Identifier", validators=[DataRequired()])
    equipment_type = StringField("Type", validators=[DataRequired()])
    description = StringField("Description", validators=[Optional()])
    calibration_due = DateField("Calibration due", validators=[Optional()])
    submit = SubmitField("Register equipment")


class MaterialLotForm(PolicyForm):
    material = StringField("Material", validators=[DataRequired()])
    lot_number = StringField("Lot number", validators=[DataRequired()])
    expiry = DateField("Expiry", validators=[DataRequired()])
    qc_status = SelectField("QC status", choices=[SelectChoice(s, s) for s in ("quarantine", "released", "rejected")])
    submit = SubmitField("Receive lot")


class EquipmentStatusForm(PolicyForm):
    status = SelectField("Status", choices=[SelectChoice(s, s.replace("_", " "))
                                            for s in ("in_service", "out_of_service", "retired")])
    calibration_due = DateField("Calibration due", validators=[Optional()])
    reason = StringField("Reason", validators=[DataRequired()])


class LotStatusForm(PolicyForm):
    qc_status = SelectField("QC status", choices=[SelectChoice(s, s) for s in ("quarantine", "released", "rejected")])
    reason = StringField("Reason", validators=[DataRequired()])


# No list starts on an answer: the first choice is an explicit empty one, which the form refuses (the person
# chooses; an untouched result is never taken as negative, nor a determination as eligible).
CHOOSE = SelectChoice("", "choose…")


def _choices(values: tuple[str, ...]) -> list[SelectChoice]:
    return [CHOOSE] + [SelectChoice(v, v) for v in values]


class DonorForm(PolicyForm):
    input_rules = {"code": "donor_code"}
    code = StringField("Donor code", validators=[DataRequired()])
    abo_rh = SelectField("ABO/Rh", choices=_choices(ABO_RH), validators=[DataRequired("Choose the ABO/Rh group.")])
    # The trial configuration's relationships (``donor_form``), no default: the service says when one is needed.
    relationship = SelectField("Relationship to the subject", choices=[CHOOSE], validators=[Optional()])


def donor_form(relationships: list[tuple[str, str]], **kwargs: Any) -> DonorForm:
    """The donor registration form with the configuration's relationships (code, label) to choose from."""
    form = DonorForm(**kwargs)
    form.relationship.choices = [CHOOSE] + [SelectChoice(code, label) for code, label in relationships]
    return form


class DonorTestForm(PolicyForm):
    test = StringField("Test", validators=[DataRequired()])
    result = SelectField("Result", choices=_choices(DONOR_RESULTS), validators=[DataRequired("Choose the result.")])
    specimen_date = DateField("Specimen drawn on", validators=[DataRequired()])


def donor_panel_form(tests: tuple[str, ...], **kwargs: Any) -> FlaskForm:
    """The donor's whole panel in one form: a result list per test (named ``result_<n>``), one specimen date."""

    class DonorPanelForm(PolicyForm):
        specimen_date = DateField("Specimen drawn on",
                                  validators=[DataRequired("Enter the date the specimen was drawn.")])

    for n, test in enumerate(tests):
        setattr(DonorPanelForm, f"result_{n}", SelectField(test, choices=_choices(DONOR_RESULTS), validators=[
            DataRequired(f"Choose the result of {test}.")]))
    return DonorPanelForm(**kwargs)


class EligibilityForm(PolicyForm):
    eligible = SelectField("Determination", choices=_choices(("eligible", "ineligible")),
                           validators=[DataRequired("Choose the determination.")])
    summary = StringField("Summary of records", validators=[DataRequired()])


class SubjectForm(PolicyForm):
    input_rules = {"code": "subject_code"}
    code = StringField("Subject code", validators=[DataRequired()])
    donor_id = SelectField("Donor", coerce=int, choices=[])
    weight_kg = StringField("Weight (kg)", validators=[DataRequired()],
                            render_kw={"inputmode": "decimal", "autocomplete": "off"})
    measured_on = DateField("Weighed on", validators=[DataRequired()])


class ScreeningForm(SubjectForm):
    """Enrolment with the eligibility screening of the effective trial configuration (see :func:`subject_form`);
    signed: the user name on the first signature of the session, the password always."""

    age_years = StringField("Age (years)", validators=[Optional()],
                            render_kw={"inputmode": "numeric", "autocomplete": "off"})
    ecog = StringField("ECOG performance status", validators=[Optional()],
                       render_kw={"inputmode": "numeric", "autocomplete": "off"})
    first_treatment_on = DateField("Planned first treatment", validators=[Optional()])
    username = StringField("User name", validators=[Optional()], render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired(message="Re-enter your password to sign.")],
                             render_kw={"autocomplete": "current-password"})

    criteria: SubjectEligibility

    def lab_rows(self) -> list[tuple[Any, Field, Field | None, Field]]:
        """(criterion, value field, ULN field or None, date measured field) of every lab criterion."""
        return [(c, self[f"lab_{c.code}_value"], self[f"lab_{c.code}_uln"] if c.uln else None,
                 self[f"lab_{c.code}_on"]) for c in self.criteria.labs]

    def exclusion_rows(self) -> list[tuple[Any, Field]]:
        return [(e, self[f"exclusion_{e.code}"]) for e in self.criteria.exclusions]

    def screening(self) -> ScreeningEntry:
        """What was entered, as typed (the service reads and checks it)."""
        answers = {"yes": True, "no": False}
        return ScreeningEntry(
            age_years=self.age_years.data or "", ecog=self.ecog.data or "",
            first_treatment_on=self.first_treatment_on.data,
            labs={c.code: (value.data or "", (uln.data or "") if uln is not None else "", on.data)
                  for c, value, uln, on in self.lab_rows()},
            exclusions={e.code: answers.get(field.data or "") for e, field in self.exclusion_rows()})


def subject_form(criteria: SubjectEligibility | None, **kwargs: Any) -> SubjectForm:
    """The enrolment form: with the screening of ``criteria`` (the effective trial configuration's
    ``subject_eligibility``) a row per lab criterion (value, ULN where the limit is relative to it, date
    measured) and a yes/no question per exclusion with no answer chosen; without, as before NK-TRIAL v5."""
    if criteria is None:
        return SubjectForm(**kwargs)

    class EnrolmentForm(ScreeningForm):
        input_rules = {**SubjectForm.input_rules}

    EnrolmentForm.criteria = criteria
    for c in criteria.labs:
        numeric = {"inputmode": "decimal", "autocomplete": "off"}
        setattr(EnrolmentForm, f"lab_{c.code}_value",
                StringField(f"{c.label} ({c.unit})", validators=[Optional()], render_kw=numeric))
        EnrolmentForm.input_rules[f"lab_{c.code}_value"] = "lab_value"
        if c.uln:
            setattr(EnrolmentForm, f"lab_{c.code}_uln",
                    StringField(f"{c.label}: ULN ({c.unit})", validators=[Optional()], render_kw=numeric))
            EnrolmentForm.input_rules[f"lab_{c.code}_uln"] = "lab_uln"
        setattr(EnrolmentForm, f"lab_{c.code}_on", DateField(f"{c.label}: measured on", validators=[Optional()]))
        EnrolmentForm.input_rules[f"lab_{c.code}_on"] = "lab_measured_on"
    for e in criteria.exclusions:
        # no default: an unanswered question is refused by the service (domain.eligibility), never taken as no
        setattr(EnrolmentForm, f"exclusion_{e.code}",
                RadioField(e.question, choices=[SelectChoice("yes", "yes"), SelectChoice("no", "no")],
                           validators=[Optional()]))
    return EnrolmentForm(**kwargs)


# --- the trial's cohort ledger (issue [3.7] item 4) -------------------------------------------------------

class DltEventForm(SignForm):
    """An adverse event of a subject, with the clinic's judgement whether it is dose-limiting; signed."""

    input_rules = {"term": "ctcae_term"}
    subject_id = SelectField("Subject", choices=[], validators=[DataRequired("Choose the subject.")])
    term = StringField("CTCAE term", validators=[DataRequired("Enter the adverse event's CTCAE term.")])
    grade = SelectField("Grade (CTCAE v5.0)", choices=_choices(("1", "2", "3", "4", "5")),
                        validators=[DataRequired("Choose the grade.")])
    attribution = SelectField("Attribution", choices=_choices(("unrelated", "unlikely", "possible", "probable",
                                                               "definite")),
                              validators=[DataRequired("Choose the attribution.")])
    onset_on = DateField("Onset", validators=[DataRequired("Enter the date the event began.")])
    is_dlt = SelectField("Dose-limiting toxicity", choices=_choices(("yes", "no")),
                         validators=[DataRequired("Answer whether it is dose-limiting.")])


class DecisionForm(SignForm):
    """The safety review's decision on the level open to new subjects; signed "Approved by"."""

    input_rules = {"based_on": "record_id"}
    level = SelectField("Level open to new subjects", choices=[], validate_choice=True)
    reason = StringField("Reason (needed when the decision differs from the recommendation)",
                         validators=[Optional()])
    based_on = HiddenField()


class LedgerIssueForm(PolicyForm):
    """Issue the cohort ledger as a signed PDF/A: why it is issued now (the site key signs it)."""

    reason = StringField("Reason for issue", validators=[DataRequired("Say why the ledger is issued now.")])
