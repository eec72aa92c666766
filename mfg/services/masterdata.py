"""Equipment and received material lots: the master data steps check against."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import inputs
from ..domain.errors import ConflictError, NotFound, ValidationFailed
from ..models import Equipment, MaterialLot
from . import audit

EQUIPMENT_STATUSES = ("in_service", "out_of_service", "retired")
QC_STATUSES = ("quarantine", "released", "rejected")


def add_equipment(session: Session, *, identifier: str, equipment_type: str, calibration_due: date | None,
                  description: str = "", status: str = "in_service") -> Equipment:
    problems = inputs.problems({"identifier": identifier, "equipment_type": equipment_type,
                                "equipment_description": description})
    if calibration_due is not None:
        problems += inputs.problems_of_day("calibration_due", calibration_due, today=date.today())
    if problems:
        raise ValidationFailed(*problems)
    identifier, equipment_type = inputs.text("identifier", identifier), inputs.text("equipment_type", equipment_type)
    if not identifier:
        problems.append("Equipment identifier is required.")
    if not equipment_type:
        problems.append("Equipment type is required.")
    if status not in EQUIPMENT_STATUSES:
        problems.append(f"Status must be one of {', '.join(EQUIPMENT_STATUSES)}.")
    if problems:
        raise ValidationFailed(*problems)
    if session.scalar(sa.select(Equipment).where(Equipment.identifier == identifier)):
        raise ConflictError(f"equipment {identifier} already exists")
    item = Equipment(identifier=identifier, equipment_type=equipment_type,
                     description=inputs.text("equipment_description", description),
                     status=status, calibration_due=calibration_due)
    session.add(item)
    audit.flush(session, reason="equipment registered")
    return item


def set_equipment_status(session: Session, item: Equipment, *, status: str, calibration_due: date | None,
                         reason: str) -> None:
    if status not in EQUIPMENT_STATUSES:
        raise ValidationFailed(f"Status must be one of {', '.join(EQUIPMENT_STATUSES)}.")
    reason = inputs.required("reason", reason, "A reason is required.")
    if calibration_due is not None:
        inputs.day("calibration_due", calibration_due, today=date.today())
    item.status = status
    item.calibration_due = calibration_due
    audit.flush(session, reason=reason)


def equipment_not_found(session: Session, identifier: str) -> str | None:
    """"Not found, scan again" when no equipment has ``identifier`` (a misread or a typing slip: no deviation,
    nothing stored), else None."""
    if session.scalar(sa.select(Equipment.id).where(Equipment.identifier == identifier)) is None:
        return f"equipment '{identifier}' not found (not registered): scan again"
    return None


def lot_not_found(session: Session, material: str, lot_number: str) -> str | None:
    """"Not found, scan again" when no lot ``lot_number`` of ``material`` was received (no deviation, nothing
    stored), else None."""
    if session.scalar(sa.select(MaterialLot.id).where(MaterialLot.material == material,
                                                      MaterialLot.lot_number == lot_number)) is None:
        return f"{material} lot '{lot_number}' not found (not received): scan again"
    return None


def equipment_problems(session: Session, identifier: str, equipment_type: str, today: date) -> list[str]:
    """Why ``identifier`` may not be used for a step needing ``equipment_type`` (empty: usable). An unknown
    identifier is :func:`equipment_not_found`; every other problem is a deviation when entered on a step."""
    item = session.scalar(sa.select(Equipment).where(Equipment.identifier == identifier))
    if item is None:
        return [equipment_not_found(session, identifier) or ""]
    problems = []
    if item.equipment_type != equipment_type:
        problems.append(f"equipment '{identifier}' is a {item.equipment_type}, not a {equipment_type}")
    if item.status != "in_service":
        problems.append(f"equipment '{identifier}' is {item.status.replace('_', ' ')}")
    if item.calibration_due is None or item.calibration_due < today:
        problems.append(f"equipment '{identifier}' is out of calibration (due {item.calibration_due})")
    return problems


def receive_lot(session: Session, *, material: str, lot_number: str, expiry: date,
                qc_status: str = "quarantine") -> MaterialLot:
    problems = inputs.problems({"material": material, "lot_number": lot_number})
    problems += inputs.problems_of_day("expiry", expiry, today=date.today())
    if problems:
        raise ValidationFailed(*problems)
    material, lot_number = inputs.text("material", material), inputs.text("lot_number", lot_number)
    if not material or not lot_number:
        problems.append("Material and lot number are required.")
    if qc_status not in QC_STATUSES:
        problems.append(f"QC status must be one of {', '.join(QC_STATUSES)}.")
    if problems:
        raise ValidationFailed(*problems)
    if session.scalar(sa.select(MaterialLot).where(MaterialLot.material == material,
                                                   MaterialLot.lot_number == lot_number)):
        raise ConflictError(f"{material} lot {lot_number} is already received")
    lot = MaterialLot(material=material, lot_number=lot_number, expiry=expiry, qc_status=qc_status)
    session.add(lot)
    audit.flush(session, reason="material lot received")
    return lot


def set_lot_status(session: Session, lot: MaterialLot, *, qc_status: str, reason: str) -> None:
    if qc_status not in QC_STATUSES:
        raise ValidationFailed(f"QC status must be one of {', '.join(QC_STATUSES)}.")
    reason = inputs.required("reason", reason, "A reason is required.")
    lot.qc_status = qc_status
    audit.flush(session, reason=reason)


def lot_problems(session: Session, material: str, lot_number: str, today: date) -> list[str]:
    """Why ``lot_number`` of ``material`` may not be used (empty: usable). An expired lot is refused. A lot
    never received is :func:`lot_not_found`; every other problem is a deviation when entered on a step."""
    lot = session.scalar(sa.select(MaterialLot).where(MaterialLot.material == material,
                                                      MaterialLot.lot_number == lot_number))
    if lot is None:
        return [lot_not_found(session, material, lot_number) or ""]
    problems = []
    if lot.expiry < today:
        problems.append(f"{material} lot '{lot_number}' expired on {lot.expiry.isoformat()}")
    if lot.qc_status != "released":
        problems.append(f"{material} lot '{lot_number}' is {lot.qc_status}, not released by QC")
    return problems


def list_equipment(session: Session) -> list[Equipment]:
    return list(session.scalars(sa.select(Equipment).order_by(Equipment.identifier)))


def list_lots(session: Session) -> list[MaterialLot]:
    return list(session.scalars(sa.select(MaterialLot).order_by(MaterialLot.material, MaterialLot.lot_number)))


def get_equipment(session: Session, equipment_id: int) -> Equipment:
    item = session.get(Equipment, equipment_id)
    if item is None:
        raise NotFound(f"no equipment with id {equipment_id}")
    return item


def get_lot(session: Session, lot_id: int) -> MaterialLot:
    lot = session.get(MaterialLot, lot_id)
    if lot is None:
        raise NotFound(f"no material lot with id {lot_id}")
    return lot
