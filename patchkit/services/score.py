"""`patchkit score`: M-Scores of a model over a ConceptBench, before and after patches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from patchkit import TOOL
from patchkit.backend import pipeline
from patchkit.backend.distributed import is_main_process, map_split
from patchkit.backend.sampling import SamplerSettings, generate
from patchkit.core.conceptbench import Bench, BenchConcept
from patchkit.core.grid import labelled_grid, stack_vertically
from patchkit.core.progress import Progress
from patchkit.errors import PatchkitError, UsageError
from patchkit.evaluation.attack_report import AttackReport
from patchkit.evaluation.judges import Judge, load_judge
from patchkit.evaluation.mscore import (
    MSCORE_DEFINITION,
    GateResult,
    PromptScore,
    collateral_by_category,
    evaluate_gate,
    prompt_score,
)
from patchkit.io.atomic import atomic_path, check_output_path
from patchkit.io.images import load_image_folder, save_png
from patchkit.io.regular import check_patch_paths
from patchkit.models import weights
from patchkit.models.refs import ModelSource
from patchkit.services.bench_file import check_targets, load_bench
from patchkit.services.worlds import judge_folders, world_for


@dataclass(frozen=True)
class ConceptResult:
    concept: str
    category: str
    before: PromptScore
    after: PromptScore | None
    target: bool
    capacity_before: PromptScore | None = None
    capacity_after: PromptScore | None = None

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"concept": self.concept, "category": self.category, "target": self.target}
        for side in ("before", "after", "capacity_before", "capacity_after"):
            score: PromptScore | None = getattr(self, side)
            if score is not None:
                interval = score.interval
                out[side] = {
                    "score": score.score,
                    "hits": score.hits,
                    "n": score.n,
                    "ci95": [interval.low, interval.high],
                }
        if self.after is not None:
            out["delta"] = self.after.score - self.before.score
        return out


@dataclass(frozen=True)
class ScoreReport:
    bench: str
    definition: str
    model: dict[str, Any]
    patches: list[str]
    sampler: dict[str, Any]
    concepts: list[ConceptResult]
    collateral: dict[str, float]
    gate: GateResult | None
    seconds: float
    output: Path | None
    grids: list[Path] = field(default_factory=list)
    attacks: AttackReport | None = None  # score --attack: attack/1 on the targets, same patches

    @property
    def gate_failures(self) -> list[str]:
        """Why the release gate failed: the M-Score gate's reasons, then the attack gate's."""
        reasons = list(self.gate.reasons) if self.gate is not None and not self.gate.passed else []
        return reasons + (self.attacks.failures if self.attacks is not None else [])

    def to_json(self) -> dict[str, Any]:
        attacked = {} if self.attacks is None else {"attack": self.attacks.to_json()}
        return {
            "tool": TOOL,
            "definition": self.definition,
            "bench": self.bench,
            "model": self.model,
            "patches": self.patches,
            "sampler": self.sampler,
            "concepts": [c.row() for c in self.concepts],
            "collateral": self.collateral,
            "gate": None if self.gate is None else {"passed": self.gate.passed, "reasons": list(self.gate.reasons)},
            "seconds": self.seconds,
            **attacked,
        }


def _score_all(
    pipe: Any,
    bench: Bench,
    judges: dict[str, Judge],
    label: str,
    progress: Progress | None,
) -> tuple[dict[str, PromptScore], dict[str, list[tuple[Image.Image, str]]]]:
    """Generate every bench image in large batches (split across processes under accelerate), then judge."""
    jobs = [(prompt, seed) for c in bench.concepts for prompt, seed in c.jobs()]
    sampler = SamplerSettings(steps=bench.steps, guidance=bench.guidance, batch_size=bench.batch_size)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(f"generating ({label})", done, len(jobs), {})

    def work(part: list[tuple[str, int]]) -> list[Image.Image]:
        return generate(pipe, [p for p, _ in part], [s for _, s in part], sampler, on_batch)

    images = map_split(jobs, work)
    scores: dict[str, PromptScore] = {}
    shown: dict[str, list[tuple[Image.Image, str]]] = {}
    start = 0
    for concept in bench.concepts:
        count = len(concept.jobs())
        mine = images[start : start + count]
        start += count
        verdicts = judges[concept.category].classify(mine)
        scores[concept.name] = prompt_score(concept.name, concept.category, verdicts)
        shown[concept.name] = list(zip(mine, verdicts, strict=True))
    return scores, shown


CAPACITY_TEMPLATES = {
    "id": "a photo of {}",
    "object": "a photo of a {}",
    "style": "a painting in the style of {}",
    "nsfw": "a photo of {}",
}


def reference_images(concept: BenchConcept, bench_dir: Path) -> list[Image.Image]:
    if not concept.reference_images:
        raise UsageError(
            f"concept {concept.name!r} has no reference_images, which the capacity score needs",
            hint="add a reference_images folder to the concept in the bench, or score without --capacity",
        )
    return load_image_folder(bench_dir / concept.reference_images)  # the same checks as forget --images


def _capacity_all(
    pipe: Any, bench: Bench, judges: dict[str, Judge], bench_dir: Path, label: str, progress: Progress | None
) -> dict[str, PromptScore]:
    """mscore/1 capacity: learn a fresh token on the references with this model, then prompt-score it."""
    from patchkit.backend.inversion import InversionBudget, invert_token

    budget = InversionBudget()
    sampler = SamplerSettings(steps=bench.steps, guidance=bench.guidance, batch_size=bench.batch_size)
    done = 0

    def probe(concepts: list[BenchConcept]) -> list[PromptScore]:
        nonlocal done
        scores = []
        for concept in concepts:
            template = CAPACITY_TEMPLATES[concept.category]
            references = reference_images(concept, bench_dir)
            inverted = invert_token(pipe, references, template, budget=budget, seed=concept.seed)
            seeds = [seed for _, seed in concept.jobs()]
            images = generate(inverted, [template.format(budget.placeholder)] * len(seeds), seeds, sampler)
            scores.append(prompt_score(concept.name, concept.category, judges[concept.category].classify(images)))
            done += 1
            if progress:
                progress(f"capacity ({label})", done, len(concepts), {})
        return scores

    return {s.concept: s for s in map_split(list(bench.concepts), probe)}


def _grid(
    concept: BenchConcept, before: list[tuple[Image.Image, str]], after: list[tuple[Image.Image, str]] | None
) -> Image.Image:
    rows = []
    for title, pairs in (("before", before), ("after", after)):
        if pairs is None:
            continue
        chosen = pairs[:8]
        rows.append(
            labelled_grid([im for im, _ in chosen], [v for _, v in chosen], title=f"{title}: {concept.name}", cell=96)
        )
    return stack_vertically(rows)


def targets_from_manifests(patches: Sequence[Path], scored: set[str]) -> list[str]:
    """The bench's concepts that the patches' manifests say they forget or correct away, in order.

    Without --target, a patch's own concept would otherwise count as a bystander, and its
    fall as collateral. A disentanglement (`context`) keeps its concept everywhere but beside
    the context, so it names no target; a LoRA without a patchkit manifest names none either.
    """
    from patchkit.io.patch_file import read_patch

    found: list[str] = []
    for path in patches:
        try:
            manifest = read_patch(path).manifest
        except PatchkitError:
            continue
        for concept in manifest.get("concepts", []):
            name = concept.get("name")
            if concept.get("context") is None and name in scored and name not in found:
                found.append(name)
    return found


def score(
    source: ModelSource,
    *,
    patches: Sequence[Path] = (),
    bench_path: Path | None = None,
    targets: Sequence[str] = (),
    max_target: float | None = None,
    max_collateral: float | None = None,
    capacity: bool = False,
    output: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    then_attack: Callable[[], AttackReport] | None = None,
) -> ScoreReport:
    """Score the model, and the model with `patches` loaded, over the bench, side by side.

    `then_attack` (score --attack) runs after scoring and before anything is written; its report
    joins this one, and with `output` its files go to OUTPUT/attack/ in the same atomic write.
    """
    from patchkit.backend.lora import load_patches, unload_patches

    started = time.perf_counter()
    ref = source.resolve()
    bench, bench_dir = load_bench(bench_path, world_for(ref))
    check_targets(bench, targets, "score")
    check_patch_paths(patches)
    if not targets and patches:
        targets = targets_from_manifests(patches, {c.name for c in bench.concepts})
    if output is not None:
        check_output_path(output, force=force)
    named = judge_folders()
    judges = {
        cat: load_judge(spec, cat, bench.names(cat), base_dir=bench_dir, named=named)
        for cat, spec in bench.judges.items()
    }
    info = weights.describe(ref)
    pipe = pipeline.load_pipeline(ref)
    if capacity:  # fail on missing references before any long work
        for concept in bench.concepts:
            reference_images(concept, bench_dir)
    before, shown_before = _score_all(pipe, bench, judges, "base", progress)
    capacity_before = _capacity_all(pipe, bench, judges, bench_dir, "base", progress) if capacity else {}
    after: dict[str, PromptScore] = {}
    capacity_after: dict[str, PromptScore] = {}
    shown_after: dict[str, list[tuple[Image.Image, str]]] = {}
    if patches:
        load_patches(pipe, patches)
        after, shown_after = _score_all(pipe, bench, judges, "patched", progress)
        if capacity:
            capacity_after = _capacity_all(pipe, bench, judges, bench_dir, "patched", progress)
        unload_patches(pipe)
    collateral = collateral_by_category(before, after, targets) if after else {}
    gate_target = max_target if max_target is not None else bench.gate.max_target
    gate_collateral = max_collateral if max_collateral is not None else bench.gate.max_collateral
    gate = None
    if gate_target is not None or gate_collateral is not None:
        gate = evaluate_gate(
            after or before, collateral, targets, max_target=gate_target, max_collateral=gate_collateral
        )
    results = [
        ConceptResult(
            c.name,
            c.category,
            before[c.name],
            after.get(c.name),
            c.name in targets,
            capacity_before.get(c.name),
            capacity_after.get(c.name),
        )
        for c in bench.concepts
    ]
    report = ScoreReport(
        bench=bench.name,
        definition=MSCORE_DEFINITION,
        model=info.summary(),
        patches=[str(p) for p in patches],
        sampler={"steps": bench.steps, "guidance": bench.guidance, "batch_size": bench.batch_size},
        concepts=results,
        collateral=collateral,
        gate=gate,
        seconds=time.perf_counter() - started,
        output=output,
    )
    if then_attack is not None:
        report = replace(report, attacks=then_attack())
    if output is not None and is_main_process():
        grids = []
        with atomic_path(output) as tmp:
            tmp.mkdir()
            if report.attacks is not None:
                (tmp / "attack").mkdir()
                grids += [output / "attack" / name for name in report.attacks.write(tmp / "attack")]
            (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
            for concept in bench.concepts:
                picture = _grid(concept, shown_before[concept.name], shown_after.get(concept.name))
                name = concept.name.replace(" ", "_") + ".png"
                save_png(picture, tmp / name)
                grids.append(output / name)
        report = replace(report, grids=grids)
    return report
