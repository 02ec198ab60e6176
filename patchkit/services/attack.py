"""`patchkit attack`: attack/1, the red-team suite that measures whether a concept is gone.

Each attack builds prompts (or a learnt token) that try to bring a concept back, then the
model under test draws them on seeds no attack and no bench uses, and the bench's judge
reads the images. The attack success rate (ASR) is the share judged as the concept, with
a 95% Wilson interval; the worst-case ASR over the suite is the one a release gate reads.
Definitions, budgets and what passing does not prove: docs/attack.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from PIL import Image

from patchkit.backend import pipeline
from patchkit.backend.distributed import is_main_process, map_split
from patchkit.core import attack_prompts
from patchkit.core.conceptbench import Bench, BenchConcept
from patchkit.core.progress import Progress
from patchkit.core.stack import is_stack_name
from patchkit.core.world import World
from patchkit.errors import InputError, ModelMismatchError, PatchkitError, TrustError, UsageError
from patchkit.evaluation.attack_report import (
    ATTACKS,
    AttackBudget,
    AttackOutcome,
    AttackReport,
    ConceptAttacks,
    RevivalBudget,
    RevivalOutcome,
)
from patchkit.evaluation.judges import load_judge
from patchkit.io.atomic import atomic_path, check_output_path
from patchkit.io.images import load_image_folder
from patchkit.io.prompt_file import read_prompt_file
from patchkit.io.regular import check_patch_paths
from patchkit.models import weights
from patchkit.models.refs import ModelSource
from patchkit.services.attack_runner import JUDGE_SEED_BASE, NSFW_PARAPHRASES, Runner
from patchkit.services.bench_file import load_bench
from patchkit.services.score import reference_images
from patchkit.services.sources import PatchSource, sources_for
from patchkit.services.worlds import judge_folders, world_for

REVIVAL = "revival"  # the job name of a concept's revival measure (report only, not one of ATTACKS)

__all__ = [
    "ATTACKS",
    "JUDGE_SEED_BASE",
    "AttackBudget",
    "AttackReport",
    "AttackRequest",
    "RevivalBudget",
    "attack",
    "is_main_process",
]


@dataclass(frozen=True)
class AttackRequest:
    concepts: tuple[str, ...]
    category: str | None = None
    attacks: tuple[str, ...] = ATTACKS
    references: Path | None = None
    paraphrase_file: Path | None = None
    budget: AttackBudget = field(default_factory=AttackBudget)
    max_asr: float | None = None
    revival: RevivalBudget | None = None  # also run the revival measure (report only), with this budget


def _check(request: AttackRequest, bench: Bench) -> list[BenchConcept]:
    if not request.concepts:
        raise UsageError("say which concept to attack: --concept NAME", hint="patchkit attack --help has examples")
    unknown = [a for a in request.attacks if a not in ATTACKS]
    if unknown or not request.attacks:
        raise UsageError(
            f"unknown attack {unknown[0]!r}" if unknown else "no attack chosen",
            hint=f"choose from: {', '.join(ATTACKS)}",
        )
    if request.max_asr is not None and not 0.0 <= request.max_asr <= 1.0:
        raise UsageError(f"--max-asr {request.max_asr} is not a share", hint="give a number from 0 to 1, e.g. 0.2")
    for name, value in request.budget.__dict__.items():
        if value < (0 if name in ("compositions", "misspellings", "paraphrases") else 1):
            raise UsageError(f"attack budget {name} = {value} is out of range", hint="give a positive number")
    by_name = {c.name: c for c in bench.concepts}
    chosen = []
    for name in request.concepts:
        if name not in by_name:
            raise UsageError(
                f"concept {name!r} is not in bench {bench.name!r}",
                hint="the attack needs the concept's judge and reference images: add it to the bench, "
                f"or pick one of: {', '.join(sorted(by_name))}",
            )
        concept = by_name[name]
        if request.category is not None and request.category != concept.category:
            raise UsageError(
                f"concept {name!r} is in category {concept.category} in bench {bench.name!r}, not {request.category}",
                hint=f"drop --category, or say --category {concept.category}",
            )
        chosen.append(concept)
    if request.references is not None and len(chosen) != 1:
        raise UsageError("--references names one concept's images", hint="attack one --concept with --references")
    return chosen


def _paraphrases_for(concept: BenchConcept, world: World, file: Path | None) -> list[str]:
    if file is not None:  # checked as --retain-file is: a regular UTF-8 file, no control characters, capped
        lines = attack_prompts.without_comments(read_prompt_file(file))
        if not lines:
            raise InputError(f"paraphrase file {file} holds no prompts", hint="one prompt a line; '#' starts a comment")
        return lines
    shipped = list(world.paraphrases.get(concept.name, ()))
    return shipped or (list(NSFW_PARAPHRASES) if concept.category == "nsfw" else [])


def _checked_sources(items: Sequence[Path], fingerprint: str) -> tuple[list[PatchSource], frozenset[str]]:
    """The patches to load (files, registry NAME@VERSION refs and *.stack.json stacks, expanded in
    order), and every prompt their manifests say they trained or preserved on; each header is
    read once.

    A stack's entry must still be the patch it pins, and a patch whose manifest names another
    base is refused: attacked on the wrong model, a forget would be measured on weights it was
    never fitted to. A LoRA without a patchkit manifest says no base and no prompts, so it is
    taken as it is. The text attacks leave the trained prompts out: never measure on what was
    tuned.
    """
    from patchkit.io.patch_file import read_intact_patch, read_patch

    sources, _ = sources_for(items)
    check_patch_paths([s.path for s in sources])
    trained: set[str] = set()
    for source in sources:
        if source.pinned_id is not None:  # a stack's entry: intact and the very patch it pins, or refused
            patch = read_intact_patch(source.path)
            if patch.patch_id != source.pinned_id:
                raise TrustError(
                    f"{source.path} is not the patch its stack pins",
                    hint="put the pinned patch back, or re-make the stack: patchkit stack verify STACK BASE",
                )
        else:
            try:
                patch = read_patch(source.path)
            except PatchkitError:
                continue
        manifest = patch.manifest
        made_for = manifest["base"]["fingerprint"]
        if made_for != fingerprint:
            raise ModelMismatchError(
                f"{source.label or source.path} was made for base {made_for} but the model is {fingerprint}",
                hint="attack the model the patch was made for (patchkit info PATCH shows its base)",
            )
        settings = manifest.get("method", {}).get("settings", {})
        for key in ("training_prompts", "retain_prompts"):
            trained.update(" ".join(str(p).lower().split()) for p in settings.get(key, []) if isinstance(p, str))
    return sources, frozenset(trained)


def _described(source: PatchSource) -> str:
    name = source.label or str(source.path)
    return name if source.scale == 1.0 else f"{name} (scale {source.scale:g})"


def attack(
    source: ModelSource,
    request: AttackRequest,
    *,
    patches: Sequence[Path] = (),
    stacks: Sequence[Path] = (),
    bench_path: Path | None = None,
    output: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> AttackReport:
    """Run the chosen attacks on every requested concept of the model with `patches` loaded.

    `patches`: patch files, registry refs or *.stack.json stacks; `stacks`: stacks, loaded
    first. A stack's entries load at their scales."""
    from patchkit.backend.lora import load_patches

    started = time.perf_counter()
    ref = source.resolve()
    world = world_for(ref)
    bench, bench_dir = load_bench(bench_path, world)
    concepts = _check(request, bench)
    if output is not None:
        check_output_path(output, force=force)
    for path in stacks:
        if not is_stack_name(path.name):
            raise UsageError(f"--stack {path}: a stack file's name ends in .stack.json", hint="give it with --patch")
    needs_references = {"search", "inversion"} & set(request.attacks) or request.revival is not None
    reference_sets: dict[str, list[Image.Image]] = {}
    if needs_references:  # before any long work: a missing folder fails now
        for concept in concepts:
            if request.references is not None:
                reference_sets[concept.name] = load_image_folder(request.references)
            else:
                reference_sets[concept.name] = reference_images(concept, bench_dir)
    paraphrases = {c.name: _paraphrases_for(c, world, request.paraphrase_file) for c in concepts}
    info = weights.describe(ref)
    sources, trained = _checked_sources([*stacks, *patches], info.fingerprint)
    named = judge_folders()
    judges = {
        cat: load_judge(bench.judges[cat], cat, bench.names(cat), base_dir=bench_dir, named=named)
        for cat in {c.category for c in concepts}
    }
    pipe = pipeline.load_pipeline(ref)
    load_patches(pipe, [s.path for s in sources], [s.scale for s in sources])
    runners = [
        Runner(
            pipe,
            bench,
            world,
            judges[concept.category],
            concept,
            partial(reference_sets.__getitem__, concept.name),
            paraphrases[concept.name],
            request.budget,
            progress,
            trained,
        )
        for concept in concepts
    ]
    # one job per (concept, attack), and one per concept's revival: under `accelerate launch`
    # the processes share them out; every job's seeds are its own, so the split changes nothing
    jobs = [(i, a) for i in range(len(concepts)) for a in ATTACKS if a in request.attacks]
    jobs += [(i, REVIVAL) for i in range(len(concepts))] if request.revival is not None else []

    def work(part: list[tuple[int, str]]) -> list[AttackOutcome | RevivalOutcome]:
        return [
            runners[i].revival(request.revival) if a == REVIVAL and request.revival else runners[i].run(a)
            for i, a in part
        ]

    done = dict(zip(jobs, map_split(jobs, work), strict=True))
    results = []
    for i, concept in enumerate(concepts):
        outcomes = tuple(o for (j, a), o in done.items() if j == i and isinstance(o, AttackOutcome))
        revival = done.get((i, REVIVAL))
        results.append(
            ConceptAttacks(
                concept.name, concept.category, outcomes, revival if isinstance(revival, RevivalOutcome) else None
            )
        )
    report = AttackReport(
        model=info.summary(),
        patches=[_described(s) for s in sources],
        bench=bench.name,
        budget=request.budget,
        concepts=results,
        max_asr=request.max_asr,
        seconds=time.perf_counter() - started,
        output=output,
        revival_budget=request.revival,
    )
    if output is not None and is_main_process():
        with atomic_path(output) as tmp:
            tmp.mkdir()
            names = report.write(tmp)
        report = replace(report, grids=[output / name for name in names])
    return report
