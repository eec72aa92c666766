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


# --- the ledger's recommendation across levels (issue [3.7] item 4) -------------------------------------

@dataclass(frozen=True)
class OpenLevel:
    """What the latest signed escalation decision opened: ``decision`` names it for people (None: no signed
    decision yet), ``level`` (None: enrolment stopped), the ``cohort`` it opened and how many subjects are
    ``assigned`` to it of ``cohort_size``."""

    decision: str | None
    decision_id: int | None
    level: str | None
    cohort: int
    assigned: int
    cohort_size: int


START = "start"


@dataclass(frozen=True)
class Recommendation:
    """What the rule recommends for the level open to new subjects: ``action`` (an :class:`Action` value, or
    ``start`` before any decision), the ``level`` it would open (None: none, enrolment stops) and why."""

    action: str
    level: str | None
    text: str


def level_action(rule: str, counts: LevelCounts, target: float | None) -> Action:
    """The rule's action for one level's counts (``rule`` is ``3+3`` or ``boin``)."""
    if rule == "boin":
        if target is None:
            raise ValueError("BOIN needs a target DLT rate")
        return boin(counts, boin_boundaries(target))
    return three_plus_three(counts)


def closed_levels(rule: str, levels: list[str], counts: dict[str, LevelCounts], target: float | None) -> list[str]:
    """The levels no decision may open again: from the lowest level whose DLTs exceed the MTD (3+3) or eliminate
    it (BOIN), that level and every higher one."""
    for i, level in enumerate(levels):
        action = level_action(rule, counts.get(level, LevelCounts(0, 0)), target)
        if action in (Action.MTD_EXCEEDED, Action.ELIMINATE):
            return levels[i:]
    return []


def recommend(*, rule: str, levels: list[str], counts: dict[str, LevelCounts], current: str | None, start: str,
              target: float | None = None) -> Recommendation:
    """The recommendation for the level open to new subjects (``current``; None before the first decision, when
    the rule recommends the start level), from the counts at every level."""
    if current is None:
        return Recommendation(START, start, f"no level is open yet: open the start level {start}")
    here = counts.get(current, LevelCounts(0, 0))
    action = level_action(rule, here, target)
    closed = closed_levels(rule, levels, counts, target)
    index = levels.index(current)
    below = levels[index - 1] if index > 0 else None
    seen = f"{here.dlts} DLT{'s' if here.dlts != 1 else ''} among {here.evaluable} evaluable at {current}" + (
        f", {here.pending} not yet evaluable" if here.pending else "")
    if action in (Action.MTD_EXCEEDED, Action.ELIMINATE, Action.DE_ESCALATE):
        if below is None:
            if action == Action.DE_ESCALATE:
                return Recommendation(Action.STAY.value, current, f"{seen}: de-escalate, but {current} is the lowest "
                                                                  "level: stay")
            return Recommendation(action.value, None, f"{seen}: {action.value} at the lowest level; no level is "
                                                      "tolerable: stop enrolment")
        return Recommendation(action.value, below, f"{seen}: {action.value}; open {below}")
    if action == Action.ESCALATE:
        above = levels[index + 1] if index + 1 < len(levels) else None
        if above is not None and above not in closed:
            return Recommendation(action.value, above, f"{seen}: escalate to {above}")
        why = "the highest level" if above is None else f"{above} is closed (MTD exceeded)"
        if rule == "3+3" and here.evaluable < 6:
            return Recommendation(Action.EXPAND.value, current, f"{seen}; {why}: expand {current} to 6")
        return Recommendation(Action.STAY.value, current, f"{seen}; {why}: {current} is the highest tolerated level")
    if action == Action.EXPAND:
        return Recommendation(action.value, current, f"{seen}: expand {current} to 6")
    if action == Action.WAIT:
        return Recommendation(action.value, current, f"{seen}: wait for evaluable subjects at {current}")
    return Recommendation(action.value, current, f"{seen}: stay at {current}")
