"""What a forget returns and records, whichever method trained it: the result, the manifest's
shared parts, and the optional before/after scoring."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchkit.core.manifest import ConceptRecord
from patchkit.core.progress import Progress
from patchkit.io.tensors_out import save_tensors
from patchkit.models.refs import ModelSource
from patchkit.services.patches import created_at, write_patch
from patchkit.training.prompts import Concept

if TYPE_CHECKING:
    from patchkit.evaluation.attack_report import AttackReport
    from patchkit.services.forget_request import ForgetAttack, ForgetRequest
    from patchkit.services.score import ScoreReport


@dataclass(frozen=True)
class ForgetResult:
    output: Path
    manifest: dict[str, Any]
    steps: int
    seconds: float
    bytes: int
    first_loss: float | None  # None for the closed form, which has no loss
    last_loss: float | None
    base_fingerprint: str
    images_generated: bool
    factorisation_error: float | None
    scores: ScoreReport | None  # when scored
    embeddings: Path | None = None  # --ti: the learnt placeholder embeddings, beside the patch
    method: str = "fmn"
    kohya: Path | None = None  # --kohya: the same patch in the layout A1111 and ComfyUI load
    attacks: AttackReport | None = None  # --attack: the suite run on the patch before it was written

    @property
    def concept_labels(self) -> list[str]:
        return [c["name"] + (f" -> {c['target']}" if "target" in c else "") for c in self.manifest["concepts"]]

    def to_json(self) -> dict[str, Any]:
        concepts = self.manifest["concepts"]
        summary: dict[str, Any] = {
            "output": str(self.output),
            "patch_id": self.manifest["patch_id"],
            "name": self.manifest["name"],
            "concepts": self.concept_labels,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "bytes": self.bytes,
            "method": self.method,
            "loss": None if self.first_loss is None else {"first": self.first_loss, "last": self.last_loss},
            "base_fingerprint": self.base_fingerprint,
            "mscores": {c["name"]: c["mscore"]["prompt"] for c in concepts if "mscore" in c},
            "collateral": self.manifest.get("collateral"),
        }
        attacked = {c["name"]: c["attack"] for c in concepts if "attack" in c}
        if attacked:
            summary["attack"] = attacked
        if self.factorisation_error is not None:
            summary["factorisation_error"] = self.factorisation_error
        if self.embeddings is not None:
            summary["ti_embeddings"] = str(self.embeddings)
        if self.kohya is not None:
            summary["kohya"] = str(self.kohya)
        return summary


def clock(seconds: float) -> tuple[str, float | None]:
    """Creation time and training seconds for the header.

    With SOURCE_DATE_EPOCH set (the reproducible-builds convention) the time is that
    epoch and the seconds are left out, so the same inputs and seed give identical bytes.
    """
    reproducible = os.environ.get("SOURCE_DATE_EPOCH") is not None
    return created_at(), None if reproducible else round(seconds, 3)


def concept_records(concepts: Sequence[Concept], placeholders: Mapping[int, str]) -> list[ConceptRecord]:
    """The manifest's `concepts` list, before any M-Scores are added."""
    records: list[ConceptRecord] = []
    for i, c in enumerate(concepts):
        record: ConceptRecord = {"name": c.name, "category": c.category, "action": c.action,
                                 "token": placeholders.get(i, c.name)}  # fmt: skip
        if c.target:
            record["target"] = c.target
        if c.context:
            record["context"] = c.context
        records.append(record)
    return records


def _mscores(report: Any, concepts: Sequence[Concept]) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    by_name = {r.concept: r for r in report.concepts}
    scores = {}
    for concept in concepts:
        result = by_name.get(concept.name)
        if result is None:
            continue
        entry: dict[str, Any] = {
            "bench": report.bench,
            "definition": report.definition,
            "prompt": {"before": result.before.score, "after": result.after.score},
        }
        if result.capacity_before is not None and result.capacity_after is not None:
            entry["capacity"] = {"before": result.capacity_before.score, "after": result.capacity_after.score}
        scores[concept.name] = entry
    return scores, dict(report.collateral)


def add_scores(
    manifest: dict[str, Any], source: ModelSource, tensors: Mapping[str, Any], concepts: Sequence[Concept],
    bench: Path | None, progress: Progress | None,
) -> ScoreReport:  # fmt: skip
    """Score the draft patch before and after, and record the M-Scores in `manifest`."""
    report: ScoreReport = _score_with(source, tensors, concepts, bench, progress)
    scores, collateral = _mscores(report, concepts)
    for entry in manifest["concepts"]:
        if entry["name"] in scores:
            entry["mscore"] = scores[entry["name"]]
    manifest["collateral"] = collateral
    return report


def _score_with(
    source: ModelSource, tensors: Mapping[str, Any], concepts: Sequence[Concept], bench: Path | None,
    progress: Progress | None,
) -> Any:  # fmt: skip
    from patchkit.services.score import score

    with tempfile.TemporaryDirectory(prefix="patchkit-score-") as folder:
        draft = Path(folder) / "draft.safetensors"
        save_tensors(draft, tensors)
        return score(source, patches=[draft], bench_path=bench, targets=[c.name for c in concepts], progress=progress)


def add_attacks(
    manifest: dict[str, Any], source: ModelSource, concepts: Sequence[Concept], settings: ForgetAttack,
    write_draft: Callable[[Path, dict[str, Any]], None], progress: Progress | None,
) -> AttackReport:  # fmt: skip
    """Attack the draft patch (written with its manifest, so the attacks leave out the prompts it
    trained and preserved on) and record each concept's ASRs in `manifest`."""
    from patchkit.services.attack import ATTACKS, AttackBudget, AttackRequest, attack

    request = AttackRequest(
        tuple(c.name for c in concepts), attacks=settings.attacks or ATTACKS, budget=settings.budget or AttackBudget()
    )
    with tempfile.TemporaryDirectory(prefix="patchkit-attack-") as folder:
        draft = Path(folder) / "draft.safetensors"
        write_draft(draft, manifest)
        report = attack(source, request, patches=[draft], bench_path=settings.bench, progress=progress)
    records = attack_records(report)
    for entry in manifest["concepts"]:
        if entry["name"] in records:
            entry["attack"] = records[entry["name"]]
    return report


def attack_records(report: AttackReport) -> dict[str, dict[str, Any]]:
    """concept -> the manifest's `attack` record (schemas/manifest.schema.json) of `report`."""
    from patchkit.evaluation.attack_report import ATTACK_DEFINITION

    out = {}
    standard = report.budget.is_standard()
    for result in report.concepts:
        worst = result.worst
        out[result.concept] = {
            "definition": ATTACK_DEFINITION,
            "bench": report.bench,
            "standard_budget": standard,
            "asr": {o.attack: (None if o.score is None else o.score.score) for o in result.outcomes},
            "worst_asr": None if worst is None or worst.score is None else worst.score.score,
            "worst_attack": None if worst is None else worst.attack,
        }
    return out


def score_attack_and_write(
    manifest: dict[str, Any], request: ForgetRequest, tensors: Mapping[str, Any], concepts: Sequence[Concept], *,
    family: str, rank: int, resolution: int, progress: Progress | None,
) -> tuple[ScoreReport | None, AttackReport | None]:  # fmt: skip
    """What both methods do once the deltas exist: score and attack them as asked (recording the
    results in `manifest`), then write the patch; nothing is written if either fails."""

    def write(path: Path, draft: dict[str, Any]) -> None:
        write_patch(path, tensors, draft, family=family, rank=rank, resolution=resolution,
                    base_name=request.model.reference)  # fmt: skip

    scores = None
    if request.score_bench is not False:
        scores = add_scores(manifest, request.model, tensors, concepts, request.score_bench, progress)
    attacks = None
    if request.attack is not None:
        attacks = add_attacks(manifest, request.model, concepts, request.attack, write, progress)
    write(request.output, manifest)
    return scores, attacks
