"""Product bags: made by the dividing step from the recorded dose plan, each scanned back once, never
changed; the windows judge the recorded event time; the batch page's countdown and growth chart data."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from mfg.demo import nk_batch as demo_nk
from mfg.demo import seed as demo
from mfg.domain import isbt128
from mfg.domain.errors import IdentityMismatch, ValidationFailed
from mfg.models import Deviation, ProductBag, StepExecution, utcnow
from mfg.services import bags, batch_pages, batches, growth, steps
from tests.support import PASSWORD, app_refusal

from .test_demo_nk import nk_demo  # noqa: F401 - the fixture

UTC = ZoneInfo("UTC")


def _run(session, nk_demo, until):  # noqa: F811
    demo.seed_master_data(session)
    subject = demo_nk.seed_demo_subject(session, nk_demo["clara"], PASSWORD)
    batch = demo_nk.run_nk_batch(session, subject=subject, performer=nk_demo["olivia"], verifier=nk_demo["oscar"],
                                 password=PASSWORD, tz=UTC, until=until)
    session.commit()
    return batch, subject


def _perform(session, batch, nk_demo, step_id, instance=1, **raw):  # noqa: F811
    position = next(p.position for p in batch.master_records if p.sop_version.code == "NK-FORMULATE")
    entry = demo_nk.entry_for("NK-FORMULATE", step_id, instance, batch=batch, subject=batch.subject,
                              bags=bags.of_batch(session, batch), now=utcnow().replace(second=0, microsecond=0),
                              tz=UTC)
    entry.raw.update(raw)
    return steps.perform_step(session, batch, position=position, step_id=step_id, instance=instance, entry=entry,
                                signer=nk_demo["olivia"], password=PASSWORD, username="olivia",
                                require_username=True, tz=UTC)


def _count(session, model):
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_filling_the_bags_divides_the_product_as_the_dose_plan_says(app, nk_demo, session):  # noqa: F811
    batch, subject = _run(session, nk_demo, ("NK-FORMULATE", "bag_preparation"))
    with pytest.raises(ValidationFailed, match=r"The dose plan gives 1 bag \(13.4 mL, at most 100.0 mL each\); "
                                               r"2 recorded"):
        _perform(session, batch, nk_demo, "bag_preparation", bag_count="2")
    session.rollback()
    assert _count(session, ProductBag) == 0
    execution = _perform(session, batch, nk_demo, "bag_preparation")
    session.commit()
    [bag] = bags.of_batch(session, batch)
    # one bag: the undivided product, division 00 (ISBT 128)
    # by hand: 13.4 mL x 15.00 x 10^6 viable/mL = 201 000 000 viable cells, of which 93 % NK = 186 930 000
    assert (bag.division, bag.volume_ml, bag.viable_cells, bag.nk_cells) == ("00", Decimal("13.4"), 201_000_000,
                                                                              186_930_000)
    assert bag.product_code_barcode == "=<S9999V00" and bag.execution_id == execution.id
    # NK-FORMULATE v5: the bag records its CD3+ cells, 201 000 000 x 0.25 % = 502 500 (issue [3.7] item 5)
    assert bag.cd3_cells == 502_500
    formulated = batches.find_execution(session, batch, 2, "formulate", 1).current_values()["formulated_at"].moment
    assert bag.expires_at == formulated + timedelta(hours=48)  # NK-TRIAL v1 shelf life
    expiry = [d for d in batch_pages.deadlines(session, batch) if d.step_title == "Product expiry"]
    assert len(expiry) == 1 and expiry[0].due_at == bag.expires_at and not expiry[0].overdue
    # the bags are append-only: the database refuses to change one (its guard; with two roles, the grants)
    with pytest.raises(sa.exc.DBAPIError, match=app_refusal(app, "UPDATE", "product_bag")):
        session.execute(sa.update(ProductBag).values(volume_ml=Decimal("99.0")))
    session.rollback()


def test_values_the_bags_were_made_from_can_no_longer_be_corrected(nk_demo, session):  # noqa: F811
    batch, subject = _run(session, nk_demo, ("NK-FORMULATE", "print_labels"))
    dose_plan = batches.find_execution(session, batch, 2, "dose_plan", 1)
    with pytest.raises(ValidationFailed, match="divided into bags .* correcting 'dose_plan'"):
        steps.correct_value(session, dose_plan, field_id="viable_concentration", raw="16.00", reason="recount",
                              field_comment="", signer=nk_demo["olivia"], password=PASSWORD, username="olivia",
                              require_username=True, tz=UTC)


def _verify(session, execution, nk_demo):  # noqa: F811
    steps.verify_step(session, execution, signer=nk_demo["oscar"], password=PASSWORD, username="oscar",
                        require_username=True)


def test_every_bag_is_scanned_back_once_and_a_foreign_label_is_a_hard_stop(nk_demo, session):  # noqa: F811
    batch, subject = _run(session, nk_demo, ("NK-FORMULATE", "dose_plan"))
    # a dilute product: 187.2 x 10^6 NK / (1.50 x 10^6/mL x 93 %) = 134.19... -> 134.2 mL, over 100 mL: 2 bags
    _verify(session, _perform(session, batch, nk_demo, "dose_plan", viable_concentration="1.50"), nk_demo)
    _perform(session, batch, nk_demo, "bag_preparation")
    first, second = bags.of_batch(session, batch)
    assert [(b.division, b.volume_ml) for b in (first, second)] == [("A0", Decimal("67.1")), ("B0", Decimal("67.1"))]
    _verify(session, _perform(session, batch, nk_demo, "print_labels"), nk_demo)
    session.commit()

    foreign = isbt128.ProductCode("S9999", "V", "C0").barcode()  # a division this product does not have
    with pytest.raises(IdentityMismatch, match="Product code with division on the label"):
        _perform(session, batch, nk_demo, "scan_back", product_code=foreign)
    session.rollback()
    with pytest.raises(ValidationFailed, match="Product code data must be 10 characters"):
        _perform(session, batch, nk_demo, "scan_back", product_code="=<S9999V")
    session.rollback()
    _verify(session, _perform(session, batch, nk_demo, "scan_back", product_code=first.product_code_barcode), nk_demo)
    session.commit()
    # the same label again for the second bag: refused, nothing stored
    with pytest.raises(ValidationFailed, match="bag A0 was already scanned in Bag 1; scan the next bag"):
        _perform(session, batch, nk_demo, "scan_back", instance=2, product_code=first.product_code_barcode)
    session.rollback()
    assert batches.find_execution(session, batch, 2, "scan_back", 2) is None
    opened = [(o.ref.step_id, o.instance) for o in batches.open_steps(session, batch)]
    assert ("scan_back", 2) in opened and ("final_inspection", 1) not in opened  # one bag still to scan
    _verify(session, _perform(session, batch, nk_demo, "scan_back", instance=2,
                              product_code=second.product_code_barcode, label_volume_ml="67.1"), nk_demo)
    # both bags scanned: no third instance although the step may repeat 6 times; the next step opens
    opened = [(o.ref.step_id, o.instance) for o in batches.open_steps(session, batch)]
    assert opened == [("final_inspection", 1)]


def test_a_receipt_typed_outside_the_hold_time_opens_a_deviation_whenever_it_is_signed(nk_demo, session):  # noqa: F811
    batch, subject = _run(session, nk_demo, ("NK-INTAKE", "transport_receipt"))
    collection_end = batches.find_execution(session, batch, 0, "identify_bag", 1).current_values()["collection_end"]
    entry = demo_nk.entry_for("NK-INTAKE", "transport_receipt", 1, batch=batch, subject=subject, bags=[],
                              now=utcnow(), tz=UTC)
    late = collection_end.moment + timedelta(hours=12, minutes=30)
    future = utcnow() + timedelta(hours=1)
    for moment, problem in ((future, "is in the future"),):
        entry.raw["received_at"] = moment.strftime("%Y-%m-%d %H:%M")
        with pytest.raises(ValidationFailed, match=problem):
            steps.perform_step(session, batch, position=0, step_id="transport_receipt", instance=1, entry=entry,
                                 signer=nk_demo["olivia"], password=PASSWORD, username="olivia",
                                 require_username=True, tz=UTC)
        session.rollback()
    if late <= utcnow():
        entry.raw["received_at"] = late.strftime("%Y-%m-%d %H:%M")
        entry.field_comments["received_at"] = "courier delayed"
        steps.perform_step(session, batch, position=0, step_id="transport_receipt", instance=1, entry=entry,
                             signer=nk_demo["olivia"], password=PASSWORD, username="olivia",
                             require_username=True, tz=UTC)
        [deviation] = session.scalars(sa.select(Deviation).where(Deviation.origin == "time_window")).all()
        assert "'transport_receipt.received_at' is 12.50 h after identify_bag.collection_end" in deviation.description


def test_the_growth_chart_reads_the_points_the_master_record_names(nk_demo, session):  # noqa: F811
    batch, subject = _run(session, nk_demo, ("NK-RELEASE", "identify_product"))
    [chart] = growth.charts(session, batch)
    assert chart.record_code == "NK-EXPAND" and chart.chart.unit == "10^6 cells"
    # seeded 190 x 10^6 NK cells (day 0); day 7: 400 mL x 6.50 x 10^6/mL x 92 %; harvest day 14: 12 555
    assert [(p.label, p.day, p.value) for p in chart.points][0] == ("Seeded", Decimal(0), Decimal(190))
    assert [p.label for p in chart.points] == ["Seeded", "Count 1", "Harvest"]
    assert chart.points[-1].value == Decimal(12555) and chart.points[-1].day == Decimal(14)
    # NK-EXPAND v2: the days are calculated from the recorded seeding and count times (day 7 + 30 min -> 7.0)
    assert [p.day for p in chart.points] == [Decimal(0), Decimal(7), Decimal(14)]
    count = batches.find_execution(session, batch, 1, "in_process_count", 1).current_values()
    assert count["culture_day"].field_type == "calculated" and count["culture_day"].text == "7.0"
    assert session.scalar(sa.select(sa.func.count()).select_from(StepExecution)) > 0
