"""Product bags: the divisions of a batch's product, made when the master record's dividing step is performed.

The master record says which step divides the product and from which recorded numbers
(``sop_schema.Division``); the trial configuration the subject's dose was assigned under gives the largest
bag volume and the shelf life; ``domain.dose.divide`` does the arithmetic; ISBT 128 gives each bag the
batch's DIN with its own division code in the product code (``A0``, ``B0``, ...; a product filled into one
bag is undivided, ``00``). Bags are append-only.

Scanning a bag back (``expected: bag.product_code`` in a master record) must match one of the batch's
bags, and each bag may be scanned once per step: the scan-back step is repeated once per bag.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..domain import calc, dose, isbt128
from ..domain.errors import ValidationFailed
from ..domain.sop_schema import Division
from ..domain.trial_config import TrialConfiguration
from ..models import Batch, ProductBag, SopVersion, StepExecution
from . import sops


def of_batch(session: Session, batch: Batch) -> list[ProductBag]:
    return list(session.scalars(sa.select(ProductBag).where(ProductBag.batch_id == batch.id)
                                .order_by(ProductBag.position)))


def planned(batch: Batch, division: Division, numbers: dict[str, Decimal | None],
            expires_from: datetime | None) -> list[dose.Bag]:
    """The bags the recorded dose plan gives: the fewest of at most the trial configuration's largest bag
    volume, volumes as equal as possible (``dose.divide``). ``numbers`` holds the recorded values
    (``step.field``, and the dividing step's own fields by id) and the context names
    (``trial.max_bag_volume_ml``, ``trial.shelf_life_hours``)."""
    if batch.subject is None or numbers.get("trial.max_bag_volume_ml") is None:
        raise ValidationFailed(f"batch {batch.lot} has no subject and trial configuration to divide the product by")
    if expires_from is None:
        raise ValidationFailed(f"the product cannot be divided before {division.expires_from} is recorded")
    totals = {name: calc.evaluate(getattr(division, name), numbers)
              for name in ("volume_ml", "viable_cells", "nk_cells")}
    cd3_cells = calc.evaluate(division.cd3_cells, numbers) if division.cd3_cells is not None else None
    maximum, shelf_life_hours = numbers["trial.max_bag_volume_ml"], numbers["trial.shelf_life_hours"]
    # checked above; the trial configuration (evaluation.context_numbers) gives every trial.* value or none
    assert maximum is not None and shelf_life_hours is not None
    return dose.divide(calc.round_half_up(totals["volume_ml"], 1), totals["viable_cells"], totals["nk_cells"],
                       max_bag_volume_ml=maximum, formulated_at=expires_from,
                       shelf_life=timedelta(hours=float(shelf_life_hours)), cd3_cells=cd3_cells)


def plan(batch: Batch, division: Division, numbers: dict[str, Decimal | None],
         expires_from: datetime | None, count: Decimal | None) -> list[dose.Bag]:
    """:func:`planned`, refused (nothing stored) when the operator's count of bags differs from it."""
    bags = planned(batch, division, numbers, expires_from)
    if count is None or count != len(bags):
        volumes = " + ".join(f"{bag.volume_ml} mL" for bag in bags)
        raise ValidationFailed(
            f"The dose plan gives {len(bags)} bag{'s' if len(bags) != 1 else ''} ({volumes}, at most "
            f"{numbers['trial.max_bag_volume_ml']} mL each); {count if count is not None else 'no number'} "
            "recorded. Fill and record the planned bags; nothing was stored.")
    return bags


def create(session: Session, batch: Batch, execution: StepExecution, planned: list[dose.Bag]) -> list[ProductBag]:
    # the bags were planned (planned() refuses a batch without a subject, whose batch pins the version)
    version = session.get(SopVersion, batch.trial_config_version_id)
    assert version is not None  # the batch's pinned trial configuration version (a foreign key)
    config = sops.definition(version)
    assert isinstance(config, TrialConfiguration)
    made = []
    codes = isbt128.division_codes(len(planned))  # one bag: the undivided product, "00"
    for bag in planned:
        division = codes[bag.index - 1]
        code = isbt128.ProductCode(config.product_description_code, config.donation_type, division)
        made.append(ProductBag(batch_id=batch.id, execution_id=execution.id, position=bag.index, division=division,
                               product_code=code.barcode().removeprefix(isbt128.PRODUCT_CODE_PREFIX),
                               volume_ml=bag.volume_ml, viable_cells=bag.viable_cells, nk_cells=bag.nk_cells,
                               cd3_cells=bag.cd3_cells, expires_at=bag.expires_at))
    session.add_all(made)
    return made


def expected_codes(session: Session, batch: Batch) -> dict[str, ProductBag]:
    """The product codes a scan of ``bag.product_code`` may match, by code."""
    return {bag.product_code: bag for bag in of_batch(session, batch)}


def normalise_scan(scanned: str) -> str:
    """A scanned product code (``=<`` + 8 characters) as stored on a bag; malformed data is refused."""
    return isbt128.parse_product_code(scanned).barcode().removeprefix(isbt128.PRODUCT_CODE_PREFIX)
