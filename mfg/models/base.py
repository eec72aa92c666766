"""The one declarative base, its naming convention and shared column types."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

import sqlalchemy as sa
import sqlalchemy.orm as so

from ..domain.audit_state import number_text, redact

__all__ = ["number_text"]  # re-exported: models compare stored numbers through it

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime. Refuses naive values; always returns aware UTC values.

    PostgreSQL stores ``timestamptz``; SQLite stores ISO text, which SQLAlchemy reads back naive, so the
    value is re-labelled as UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store UTC-aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


IntPK = Annotated[int, so.mapped_column(primary_key=True)]
UTC = Annotated[datetime, so.mapped_column(UTCDateTime())]
Str40 = Annotated[str, so.mapped_column(sa.String(40))]
Str200 = Annotated[str, so.mapped_column(sa.String(200))]
Hash64 = Annotated[str, so.mapped_column(sa.String(64))]


class Base(so.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class Audited:
    """Mixin for GMP records: every insert and update writes an audit entry (see services.audit).

    Deleting an audited record is refused. ``__audit_redact__`` names columns whose values the trail
    records only by digest (password hashes: ``domain.audit_state.redact``), so that ``audit verify`` can tell
    the row still holds what the trail says without the trail revealing it.
    """

    __audit_redact__: ClassVar[frozenset[str]] = frozenset()
    # Columns left out of a creation entry because another column already fingerprints them.
    __audit_omit__: ClassVar[frozenset[str]] = frozenset()

    def audit_values(self) -> dict[str, Any]:
        """Column values as the audit trail records them at creation."""
        values = {}
        for column in sa.inspect(type(self)).columns:
            key = column.key
            if key not in self.__audit_omit__:
                values[key] = redact(getattr(self, key)) if key in self.__audit_redact__ else getattr(self, key)
        return values


class Signable:
    """Mixin for records that carry e-signatures: ``signed_content`` is exactly what a signature binds.

    It must contain only what the signer attested to; fields that change later through the normal
    workflow (status, for example) do not belong in it.
    """

    def signed_content(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def signed_content_as(self, stored: str) -> dict[str, Any]:
        """The record's content in the form of ``stored`` (what a signature holds). A record whose signed
        content grew keeps computing the older form for the signatures made with it (``signed_form``)."""
        return self.signed_content()


def signed_form(stored: str) -> int:
    """The form of a stored signed content: its ``form`` key, 1 when it has none (before forms existed)."""
    form = json.loads(stored).get("form", 1)
    return form if isinstance(form, int) else 1
