"""The M-Score, definition mscore/1 (docs/mscore.md): pure arithmetic on judge verdicts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MSCORE_DEFINITION = "mscore/1"
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson_interval(hits: int, n: int, z: float = _Z95) -> Interval:
    """95% Wilson score interval for a proportion; sound at 0 and 1, unlike the normal one."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    high = 1.0 if hits == n else min(1.0, centre + half)
    return Interval(low, high)


@dataclass(frozen=True)
class PromptScore:
    concept: str
    category: str
    hits: int
    n: int

    @property
    def score(self) -> float:
        return self.hits / self.n

    @property
    def interval(self) -> Interval:
        return wilson_interval(self.hits, self.n)


def prompt_score(concept: str, category: str, verdicts: Sequence[str]) -> PromptScore:
    """Fraction of images the judge attributes to `concept` (others and "none" count as misses)."""
    if not verdicts:
        raise ValueError("no verdicts to score")
    return PromptScore(concept, category, sum(v == concept for v in verdicts), len(verdicts))


def collateral_by_category(
    before: Mapping[str, PromptScore], after: Mapping[str, PromptScore], targets: Iterable[str]
) -> dict[str, float]:
    """Mean change (after - before) of the prompt score of every non-target concept, per category."""
    excluded = set(targets)
    changes: dict[str, list[float]] = {}
    for name, score in before.items():
        if name in excluded or name not in after:
            continue
        changes.setdefault(score.category, []).append(after[name].score - score.score)
    return {category: sum(values) / len(values) for category, values in sorted(changes.items())}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...]


def evaluate_gate(
    after: Mapping[str, PromptScore],
    collateral: Mapping[str, float],
    targets: Iterable[str],
    *,
    max_target: float | None,
    max_collateral: float | None,
) -> GateResult:
    """Fail when a forgotten concept still scores above `max_target`, or a category loses more than `max_collateral`."""
    reasons = []
    if max_target is not None:
        for name in targets:
            if name in after and after[name].score > max_target:
                reasons.append(f"target {name} still scores {after[name].score:.3f} > {max_target}")
    if max_collateral is not None:
        for category, change in collateral.items():
            if -change > max_collateral:
                reasons.append(f"{category} concepts lose {-change:.3f} on average > {max_collateral}")
    return GateResult(not reasons, tuple(reasons))
