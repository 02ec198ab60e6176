"""The README's demo: the main job, run end to end on the bundled testbed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.backend import pipeline
from patchkit.backend.sampling import generate
from patchkit.core.grid import labelled_grid, stack_vertically
from patchkit.core.progress import Progress
from patchkit.io.images import save_png
from patchkit.models import refs, weights
from patchkit.models.refs import TESTBED_REFERENCE, ModelSource
from patchkit.services import registry
from patchkit.services.apply import ApplyResult, apply
from patchkit.services.bench_file import check_targets, load_bench
from patchkit.services.forget import ForgetResult, forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.services.score import ScoreReport
from patchkit.services.sources import PatchSource
from patchkit.services.testbed import DEFAULT_SAMPLER
from patchkit.services.worlds import world_for
from patchkit.testbed import world
from patchkit.testbed.judging import JudgePanel
from patchkit.training.prompts import Concept

DEMO_CONCEPTS: tuple[tuple[str, world.Category], ...] = (
    ("alice", "id"),
    ("john doe", "id"),
    ("circle", "object"),
    ("ring", "object"),
    ("neon", "style"),
    ("gore", "nsfw"),
)
DEMO_TARGET = "circle"
# The repository's example registry; absent from an installed wheel, and then skipped.
EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "registry"


@dataclass(frozen=True)
class DemoConcept:
    concept: str
    category: str
    prompt: str
    rate: float


@dataclass(frozen=True)
class DemoResult:
    fingerprint: str
    family: str
    grid: Path
    concepts: list[DemoConcept]
    seconds: float
    forgotten: ForgetResult
    scores: ScoreReport  # the forget's M-Scores before and after, on the testbed's bench
    applied: ApplyResult
    revert_data: Path  # the applied copy's revert file, kept apart from it
    examples: list[dict[str, Any]]  # the example registry's entries, when it is there

    def to_json(self) -> dict[str, Any]:
        scores = self.scores.concepts
        return {"fingerprint": self.fingerprint, "family": self.family, "grid": str(self.grid),
                "concepts": [c.__dict__ for c in self.concepts], "seconds": self.seconds,
                "patch": str(self.forgotten.output), "applied": str(self.applied.output),
                "output_fingerprint": self.applied.output_fingerprint,
                "examples": [f"{e['name']}@{e['version']}" for e in self.examples],
                "mscores": {c.concept: {"before": c.before.score, "after": c.after.score if c.after else None}
                            for c in scores}}  # fmt: skip


def run_demo(
    out_dir: Path, *, images_per_concept: int = 8, bench: Path | None = None, progress: Progress | None = None
) -> DemoResult:
    """Load the testbed, generate each demo concept, judge the images, write a labelled grid.

    `bench` scores the forget (None: the testbed's own bench); it is checked before any image is drawn.
    """
    started = time.perf_counter()
    ref = refs.resolve(TESTBED_REFERENCE)
    if bench is not None:  # before the grid's images: the forget re-checks it, but only after them
        check_targets(load_bench(bench, world_for(ref))[0], [DEMO_TARGET], "demo")
    out_dir.mkdir(parents=True, exist_ok=True)
    info = weights.describe(ref)
    pipe = pipeline.load_pipeline(ref)
    judges = JudgePanel.load()
    rows, concepts = [], []
    for index, (name, category) in enumerate(DEMO_CONCEPTS):
        prompt = world.bench_prompts(name, category)[0]
        seeds = list(range(images_per_concept))
        images = generate(pipe, [prompt] * images_per_concept, seeds, DEFAULT_SAMPLER)
        verdicts = judges.classify(category, images)
        rate = sum(v == name for v in verdicts) / len(verdicts)
        concepts.append(DemoConcept(name, category, prompt, rate))
        captions = [f"seed {s}\n{v}" for s, v in zip(seeds, verdicts, strict=True)]
        rows.append(labelled_grid(images, captions, title=f'"{prompt}"  judged {name}: {rate:.0%}', cell=96))
        if progress:
            progress("generating", index + 1, len(DEMO_CONCEPTS), {})
    grid = out_dir / "testbed-grid.png"
    save_png(stack_vertically(rows), grid)
    # The main job: forget one concept with the defaults, scored before/after on the testbed bench.
    request = ForgetRequest(
        ModelSource(TESTBED_REFERENCE),
        (Concept(DEMO_TARGET, "object"),),
        out_dir / f"no-{DEMO_TARGET}.safetensors",
        score_bench=bench,
        force=True,
    )
    forgotten = forget(request, progress)
    if forgotten.scores is None:  # score_bench=None asks for the testbed's bench: always scored
        raise RuntimeError("the demo's forget returned no M-Scores")
    # The release step: fuse it into a copy of the testbed, with provenance. The revert data goes
    # to a file of its own: the released copy must not carry what restores the circle.
    revert_data = out_dir / "safe-testbed.revert.safetensors"
    applied = apply(TESTBED_REFERENCE, [PatchSource(forgotten.output)], out_dir / "safe-testbed", overwrite=True,
                    revert_data=revert_data)  # fmt: skip
    examples = registry.entries(EXAMPLE_REGISTRY) if (EXAMPLE_REGISTRY / "registry.json").is_file() else []
    return DemoResult(
        fingerprint=info.fingerprint,
        family=info.family,
        grid=grid,
        concepts=concepts,
        seconds=time.perf_counter() - started,
        forgotten=forgotten,
        scores=forgotten.scores,
        applied=applied,
        revert_data=revert_data,
        examples=examples,
    )
