"""The guards of a subject's dose and batches (pure): which batches are open, which count as infusions."""

from __future__ import annotations

from mfg.domain import guards

CLARA = guards.Person(1, frozenset({"clinical"}), "Clara")
OLIVIA = guards.Person(2, frozenset({"operator"}), "Olivia")


def _start(batches, infusions=1):
    return guards.texts(guards.start_product_batch(OLIVIA, subject_code="S-01", donor_problems=[], dose_signed=True,
                                                   batches=batches, infusions_per_subject=infusions))


def test_a_dose_reassignment_waits_for_every_open_batch_and_names_each():
    for finished in ("released", "rejected", "recalled", "cancelled"):
        assert guards.assign_dose_level(CLARA, subject_code="S-01", batches=[("L1", finished)]) == []
    refused = guards.texts(guards.assign_dose_level(CLARA, subject_code="S-01", batches=[
        ("L1", "released"), ("L2", "conditionally_released"), ("L3", "under_investigation"), ("L4", "created")]))
    assert [text.split(" of ")[0] for text in refused] == ["batch L2", "batch L3", "batch L4"]
    assert "is open (under investigation)" in refused[1]
    assert guards.texts(guards.assign_dose_level(OLIVIA, subject_code="S-01", batches=[])) == [
        "assigning a dose level needs the clinical role"]


def test_a_batch_beyond_the_infusions_per_subject_is_refused_naming_the_earlier_ones():
    assert _start([("L1", "rejected"), ("L2", "cancelled")]) == []  # never infused: not counted
    assert _start([("L1", "recalled")]) == [  # a recalled product may have been infused
        "subject S-01 already has batch L1 (recalled): the trial allows 1 infusion per subject "
        "(infusions_per_subject); another batch is refused"]
    assert _start([("L1", "released")], infusions=2) == []
    assert _start([("L1", "released"), ("L2", "rejected"), ("L3", "in_progress")], infusions=2) == [
        "subject S-01 already has batch L3, open (in progress): a second batch is not opened while one is",
        "subject S-01 already has batches L1 (released), L3 (in progress): the trial allows 2 infusions per "
        "subject (infusions_per_subject); another batch is refused"]
    assert _start([("L1", "released")], infusions=None) == []  # no effective configuration: the service refuses
