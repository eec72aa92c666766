"""Dose-escalation rules of a phase I trial (issue [3.7] items 3 and 7): pure code, no I/O.

The trial (NCT05744440) escalates through its dose levels and observes each subject for dose-limiting
toxicities (DLT) during a window after infusion. Given what has been observed at the current level, a rule
recommends what comes next. The safety review decides; this module only computes the recommendation, and the
tables a protocol prints.

Counts at one level (:class:`LevelCounts`): ``evaluable`` subjects (their DLT window has closed, or they had a
DLT, which makes them evaluable at once), ``dlts`` among them, and ``pending`` subjects whose window is still
open without a DLT. Pending subjects are never counted as DLT-free. A recommendation that would add subjects
or move up (escalate, expand, stay) waits for them (:attr:`Action.WAIT`); one that the DLTs already observed
force (de-escalate, MTD exceeded, eliminate) does not wait.

**3+3** (the default; Storer 1989; Le Tourneau, Lee and Siu, J Natl Cancer Inst 2009;101:708):

* 3 evaluable: 0 DLT: escalate; 1: expand the level to 6; 2 or 3: MTD exceeded (the MTD is the level below);
* 6 evaluable: at most 1 DLT: escalate; 2 or more: MTD exceeded;
* 2 DLTs at a level exceed it as soon as they are seen, whatever is pending.

**BOIN** (Liu and Yuan, J R Stat Soc C 2015;64:507; Yuan et al., Clin Cancer Res 2016;22:4291), target DLT rate
φ, with the default φ1 = 0.6φ (highest sub-therapeutic rate) and φ2 = 1.4φ (lowest overly toxic rate):

* λe = ln((1 − φ1)/(1 − φ)) / ln(φ(1 − φ1) / (φ1(1 − φ))), λd = ln((1 − φ)/(1 − φ2)) / ln(φ2(1 − φ) / (φ(1 − φ2)));
* with n evaluable and y DLTs at the level: escalate if y/n ≤ λe, de-escalate if y/n ≥ λd, else stay;
* eliminate the level (and every higher one) when n ≥ 3 and Pr(p > φ | y, n) > 0.95 under a Beta(1, 1) prior.
  For whole numbers the posterior tail is a binomial sum: Pr(p > φ) with p ~ Beta(1 + y, 1 + n − y) equals
  Pr(Binomial(n + 1, φ) ≤ y), so no statistics library is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

ELIMINATION_CUTOFF = 0.95
ELIMINATION_MIN_EVALUABLE = 3


class Action(str, Enum):
    ESCALATE = "escalate"
    STAY = "stay"
    EXPAND = "expand"
    DE_ESCALATE = "de-escalate"
    MTD_EXCEEDED = "MTD exceeded"
    ELIMINATE = "eliminate"
    WAIT = "wait"  # not enough evaluable subjects yet: enrol or wait for open DLT windows


@dataclass(frozen=True)
class LevelCounts:
    evaluable: int
    dlts: int
    pending: int = 0

    def __post_init__(self) -> None:
        if min(self.evaluable, self.dlts, self.pending) < 0 or self.dlts > self.evaluable:
            raise ValueError(f"impossible counts: {self.dlts} DLTs among {self.evaluable} evaluable subjects")


# --- 3+3 ------------------------------------------------------------------------------------------------

def three_plus_three(counts: LevelCounts) -> Action:
    """The 3+3 recommendation for one level (module docstring)."""
    if counts.dlts >= 2:
        return Action.MTD_EXCEEDED
    if counts.pending or counts.evaluable not in (3, 6):
        return Action.WAIT
    if counts.evaluable == 3:
        return Action.ESCALATE if counts.dlts == 0 else Action.EXPAND
    return Action.ESCALATE


# --- BOIN -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoinBoundaries:
    target: float
    escalate: float  # λe
    de_escalate: float  # λd


def boin_boundaries(target: float, phi1: float | None = None, phi2: float | None = None) -> BoinBoundaries:
    """λe and λd for target DLT rate ``target`` (φ1, φ2 default to 0.6φ and 1.4φ)."""
    if not 0 < target < 1:
        raise ValueError(f"the target DLT rate must lie between 0 and 1, not {target}")
    phi1 = 0.6 * target if phi1 is None else phi1
    phi2 = 1.4 * target if phi2 is None else phi2
    if not 0 < phi1 < target < phi2 < 1:
        raise ValueError("BOIN needs 0 < φ1 < φ < φ2 < 1")
    escalate = math.log((1 - phi1) / (1 - target)) / math.log(target * (1 - phi1) / (phi1 * (1 - target)))
    de_escalate = math.log((1 - target) / (1 - phi2)) / math.log(phi2 * (1 - target) / (target * (1 - phi2)))
    return BoinBoundaries(target, escalate, de_escalate)


def posterior_above(target: float, dlts: int, evaluable: int) -> float:
    """Pr(p > target | dlts among evaluable), Beta(1, 1) prior: Pr(Binomial(evaluable + 1, target) ≤ dlts)."""
    trials = evaluable + 1
    return sum(math.comb(trials, k) * target ** k * (1 - target) ** (trials - k) for k in range(dlts + 1))


def eliminated(target: float, dlts: int, evaluable: int, cutoff: float = ELIMINATION_CUTOFF) -> bool:
    return evaluable >= ELIMINATION_MIN_EVALUABLE and posterior_above(target, dlts, evaluable) > cutoff


def boin(counts: LevelCounts, boundaries: BoinBoundaries) -> Action:
    """The BOIN recommendation for one level (module docstring)."""
    n, y = counts.evaluable, counts.dlts
    if n and eliminated(boundaries.target, y, n):
        return Action.ELIMINATE
    if n and y / n >= boundaries.de_escalate:
        return Action.DE_ESCALATE
    if counts.pending or n == 0:
        return Action.WAIT
    return Action.ESCALATE if y / n <= boundaries.escalate else Action.STAY


# --- decision tables (``flask --app mfg trial decision-table``) -----------------------------------------

def three_plus_three_table() -> list[tuple[int, int, Action]]:
    """(evaluable, DLTs, action) for every count of DLTs among 3 and among 6 subjects."""
    return [(n, y, three_plus_three(LevelCounts(n, y))) for n in (3, 6) for y in range(n + 1)]


@dataclass(frozen=True)
class BoinRow:
    evaluable: int
    escalate_at_most: int | None  # escalate if DLTs ≤ this (None: never)
    de_escalate_at_least: int | None  # de-escalate if DLTs ≥ this (None: never)
    eliminate_at_least: int | None  # eliminate if DLTs ≥ this (None: never)


def boin_table(boundaries: BoinBoundaries, max_evaluable: int = 12) -> list[BoinRow]:
    """For 1 to ``max_evaluable`` subjects at a level: the DLT counts that escalate, de-escalate and eliminate
    (the counts between escalation and de-escalation stay)."""
    rows = []
    for n in range(1, max_evaluable + 1):
        counts = range(n + 1)
        escalate = [y for y in counts if y / n <= boundaries.escalate]
        de_escalate = [y for y in counts if y / n >= boundaries.de_escalate]
        eliminate = [y for y in counts if eliminated(boundaries.target, y, n)]
        rows.append(BoinRow(n, max(escalate) if escalate else None, min(de_escalate) if de_escalate else None,
                            min(eliminate) if eliminate else None))
    return rows
