"""How each master record field type appears on a step screen.

One class per field type, keyed like ``domain.values.KINDS`` (which parses, judges limits and formats
values): here only the WTForms field and its input hints. Every input arrives as text and is parsed by
the service, so that a malformed entry gets the same message on every path and nothing is stored.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flask_wtf import FlaskForm
from wtforms import BooleanField, Field, RadioField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from ..domain import inputs
from ..domain.sop_schema import Step
from .forms import SignForm


class FieldWidget:
    input_attrs: ClassVar[dict[str, Any]] = {"autocomplete": "off"}

    def make(self, field: Any) -> Field:
        return StringField(field.label, validators=[Optional()],
                           description=field.help, render_kw=dict(self.input_attrs))


class NumberWidget(FieldWidget):
    input_attrs = {"autocomplete": "off", "inputmode": "decimal"}


class IntegerWidget(FieldWidget):
    input_attrs = {"autocomplete": "off", "inputmode": "numeric"}


class TextWidget(FieldWidget):
    def make(self, field: Any) -> Field:
        return TextAreaField(field.label, validators=[Optional()],
                             description=field.help, render_kw={"rows": 2})


class ChoiceWidget(FieldWidget):
    def make(self, field: Any) -> Field:
        return RadioField(field.label, choices=[SelectChoice(c, c) for c in field.choices],
                          validators=[Optional()], description=field.help, validate_choice=False)


class DateTimeWidget(FieldWidget):
    input_attrs = {"autocomplete": "off", "placeholder": "YYYY-MM-DD HH:MM"}


class ConfirmationWidget(FieldWidget):
    def make(self, field: Any) -> Field:
        return BooleanField(field.statement, description=field.help, false_values=("", "false", "no"))


class ScanWidget(FieldWidget):
    # data-scan: app.js moves to the next input when the scanner "presses" Enter.
    input_attrs = {"autocomplete": "off", "data-scan": "1", "placeholder": "scan or type"}


WIDGETS: dict[str, FieldWidget] = {
    "number": NumberWidget(), "integer": IntegerWidget(), "text": TextWidget(), "choice": ChoiceWidget(),
    "datetime": DateTimeWidget(), "confirmation": ConfirmationWidget(), "scan": ScanWidget(),
    "equipment": ScanWidget(), "material": ScanWidget(),
}


class StepForm(SignForm):
    """Base of every step screen's form: the signing fields plus the step comment. A typed value (``v_<id>``)
    is checked by the general text rule here and by its field's kind in the service (mfg.domain.values);
    its comment (``c_<id>``) is a comment."""

    def input_rule(self, name: str, field: Field) -> inputs.Rule | None:
        return super().input_rule({"v_": "step_value", "c_": "comment"}.get(name[:2], name), field)


def step_form_class(step: Step) -> type[FlaskForm]:
    """Build the form class for ``step`` (WTForms' dynamic form composition)."""

    class Form(StepForm):
        pass

    for f in step.fields:
        # every value may need its comment, a calculated one too (out of its alert limits: stored, flagged,
        # commented); only typed fields have an input for the value itself
        setattr(Form, f"c_{f.id}", StringField("Comment on this value", validators=[Optional()]))
        if f.type != "calculated":
            setattr(Form, f"v_{f.id}", WIDGETS[f.type].make(f))
    return Form


def raw_value(form: FlaskForm, field: Any) -> str:
    data = getattr(form, f"v_{field.id}").data
    if field.type == "confirmation":
        return "yes" if data else ""
    return "" if data is None else str(data)
