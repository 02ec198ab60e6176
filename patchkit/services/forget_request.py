"""One forget or correct request, built once by the CLI (or a script) and handed to the service.

Light on purpose (no torch): the CLI reads the defaults from here to print them in --help.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from patchkit.errors import UsageError
from patchkit.io.prompt_file import read_prompt_file
from patchkit.models.refs import ModelSource
from patchkit.training.presets import PRESETS, preset_concepts, preset_settings
from patchkit.training.prompts import Concept, pair_concepts
from patchkit.training.settings import CapacitySettings, ClosedFormSettings, ForgetSettings, correction_settings

__all__ = [
    "METHODS",
    "PRESETS",
    "CapacitySettings",
    "ClosedFormSettings",
    "Concept",
    "ForgetAttack",
    "ForgetRequest",
    "ForgetSettings",
    "ModelSource",
    "choose_concepts",
    "correction_settings",
    "settings_for",
]


if TYPE_CHECKING:
    from patchkit.evaluation.attack_report import AttackBudget


@dataclass(frozen=True)
class ForgetAttack:
    """`forget --attack`: run the red-team suite on the new patch before it is written, and
    record each concept's ASRs in its manifest (docs/attack.md)."""

    bench: Path | None = None  # None: the model's world's bench
    attacks: tuple[str, ...] | None = None  # None: the whole suite
    budget: AttackBudget | None = None  # None: attack/1's standard budget


Method = Literal["fmn", "closed-form"]
METHODS: tuple[Method, ...] = ("fmn", "closed-form")


@dataclass(frozen=True)
class ForgetRequest:
    """Everything a forget (or, for concepts with a target, a correction) run needs to know."""

    model: ModelSource
    concepts: tuple[Concept, ...]
    output: Path
    settings: ForgetSettings = field(default_factory=ForgetSettings)  # FMN's
    method: Method = "fmn"
    closed_form: ClosedFormSettings = field(default_factory=ClosedFormSettings)
    retain_prompts: tuple[str, ...] = ()  # the user's own, added to the default preservation
    default_retain: bool = True  # False: hold only `retain_prompts` (--no-default-retain)
    templates: tuple[str, ...] | None = None  # --prompt: "{}" marks the concept; None: the category's
    # --anchor-to: what every forget prompt is pulled to, instead of the prompt without the concept
    # ("" is the empty prompt, ESD's anchor: for a concept the concept-free prompt still draws)
    anchor: str | None = None
    # --robust: also train on compositions with other concepts (core/robust_prompts.py); with FMN,
    # train by erasing the concept's capacity (training/capacity.py) with these settings
    robust: bool = False
    capacity: CapacitySettings = field(default_factory=CapacitySettings)
    images_dir: Path | None = None  # None: the base model draws the training images
    name: str | None = None
    version: str = "1.0.0"
    author: str | None = None
    license_id: str | None = None
    # False: no scoring; None: the model's world's bench; a path: that ConceptBench
    score_bench: Path | Literal[False] | None = False
    attack: ForgetAttack | None = None  # None: no attack run
    force: bool = False
    # also write the patch in the kohya layout (OUT.kohya.safetensors), the one A1111 and ComfyUI load
    kohya: bool = False

    def __post_init__(self) -> None:  # a list from a script is as good as a tuple: keep it immutable
        object.__setattr__(self, "concepts", tuple(self.concepts))
        object.__setattr__(self, "retain_prompts", tuple(self.retain_prompts))
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple(self.templates))


def choose_concepts(
    names: Sequence[str], categories: Sequence[str], *, preset: str | None = None, context: str | None = None
) -> list[Concept]:
    """The concepts a forget names: a preset's list, or --concept/--category pairs (with an optional context)."""
    if preset is not None and (names or categories or context):
        raise UsageError("give --preset or --concept/--category, not both", hint="patchkit forget --help")
    if preset is not None:
        return preset_concepts(preset)
    if not (names and categories):
        raise UsageError(
            "say what to forget: --concept NAME --category id|object|style|nsfw, or --preset",
            hint="patchkit forget testbed -c circle --category object -o no-circle.safetensors",
        )
    concepts = pair_concepts(list(names), list(categories))
    if context is None:
        return concepts
    if len(concepts) != 1:
        raise UsageError("--context disentangles one --concept at a time", hint="run forget once per concept")
    return [Concept(concepts[0].name, concepts[0].category, context=context)]


def read_retain_files(paths: Sequence[Path]) -> list[str]:
    """Every --retain-file's prompts, in order; each file is checked before any work."""
    return [prompt for path in paths for prompt in read_prompt_file(path)]


def settings_for(preset: str | None, settings: ForgetSettings, given: set[str]) -> ForgetSettings:
    """`settings`, with a preset's own defaults for the fields the user did not set (`given`)."""
    return settings if preset is None else preset_settings(preset, settings, given)
