"""`patchkit forget` and `patchkit correct`: train a Forget-Me-Not patch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from patchkit.cli.console import Output
from patchkit.cli.options import (
    AllowPickleOpt,
    AuthorOpt,
    ConfigOpt,
    JsonOpt,
    KohyaOpt,
    LicenseOpt,
    ModelArg,
    NameOpt,
    OverwriteOpt,
    VersionOpt,
)
from patchkit.errors import UsageError
from patchkit.services.forget_request import (
    METHODS,
    PRESETS,
    CapacitySettings,
    ClosedFormSettings,
    Concept,
    ForgetAttack,
    ForgetRequest,
    ForgetSettings,
    ModelSource,
    choose_concepts,
    correction_settings,
    settings_for,
)

if TYPE_CHECKING:
    from patchkit.services.forget import ForgetResult

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Patch file to write (.safetensors).")]
RankOpt = Annotated[int, typer.Option(help="LoRA rank of the patch (with --full: the rank of the SVD export).")]
StepsOpt = Annotated[int, typer.Option(help="Optimisation steps.")]
LrOpt = Annotated[float, typer.Option(help="Learning rate of the adapters.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for training images, noise and adapter init.")]
ImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="Folder of images of the concept (one subfolder per concept when there are several). "
        "Default: the base model generates them.",
    ),
]
RetainOpt = Annotated[
    list[str] | None,
    typer.Option(help="A prompt whose output must not change; repeat. Added to the default preservation."),
]
RetainFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--retain-file", help="A UTF-8 file of retain prompts, one a line; added to --retain. Repeatable."),
]
RobustOpt = Annotated[
    bool,
    typer.Option(
        "--robust",
        help="Harder to bring back (docs/attack.md). Both methods also train on the concept among the world's "
        'other concepts and modifiers ("a photo of a circle in the style of neon"). With FMN it erases what the '
        "UNet can draw, not only what the name calls up: adapters on the image pathway too, the concept pushed out "
        "of the empty prompt's prediction, and 3 rounds that learn a token still drawing it through the patch and "
        "forget that too. About 20x the training time; on the testbed attack/1's worst case fell to 0.19 (triangle) "
        "and 0.22 (alice) from 0.91, but stayed 0.75-0.88 for neon and circle. Measure with patchkit attack and "
        "patchkit score.",
    ),
]
DefaultRetainOpt = Annotated[
    bool,
    typer.Option(
        "--default-retain/--no-default-retain",
        help="Also hold patchkit's default preservation: everyday captions, the concept's nearest words in the "
        "model's own text encoder, and the other concepts of a world patchkit knows (docs/forget.md).",
    ),
]
PromptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--prompt",
        help='A training prompt template in the model\'s own phrasing, "{}" marking the concept; repeat. '
        "Replaces the category's generic templates (for correct, the same template names the target).",
    ),
]
ScoreOpt = Annotated[
    bool, typer.Option("--score", help="Score before/after on the bench and record the M-Scores in the manifest.")
]
BenchOpt = Annotated[
    Path | None,
    typer.Option(
        "--bench", help="ConceptBench JSON for --score and --attack (default: the model's own; the testbed has one)."
    ),
]
AttackOpt = Annotated[
    bool,
    typer.Option(
        "--attack",
        help="Before writing, run the red-team suite (attack/1, as `patchkit attack`) on the new patch and record "
        "each concept's ASRs in the manifest, for `registry list --max-asr`. Minutes per concept.",
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="fmn: Forget-Me-Not, trained on generated images (seconds to minutes). closed-form: solve the "
        "cross-attention edit in one step from the text encoder alone, no images (UCE's ridge solution; "
        "docs/closed-form.md). Same patch format either way.",
    ),
]
RidgeOpt = Annotated[
    float,
    typer.Option(help="closed-form only: ridge on the solve, relative to the edited states' scale."),
]
PositionsOpt = Annotated[
    str,
    typer.Option(
        "--positions",
        help="closed-form only: which text states the solve reads. context: every position the model reads, "
        "padding included, as UCE does (the default). prompt: through each prompt's end-of-text only, several "
        "times faster on 77-token models, but a model that reads its padding keeps the concept there (on the "
        "testbed 3 of 4 objects and gore stayed); docs/closed-form.md has the measurements.",
    ),
]
D = ForgetSettings()
CF = ClosedFormSettings()
# FMN's training options: --method closed-form refuses them rather than ignore them
_FMN_ONLY = ("steps", "lr", "seed", "full", "ti", "ti_steps", "use_pooler", "attention", "anchor", "images_dir",
             "every_template", "hold_states")  # fmt: skip
_OPTION_NAMES = {"images_dir": "--images", "every_template": "--every-template/--own-templates"}
# command-line parameter -> the ForgetSettings field it sets, for the ones presets override
_SETTING_PARAMS = {"steps": "steps", "ti": "textual_inversion"}


def _run(ctx: typer.Context, request: ForgetRequest) -> ForgetResult:
    from patchkit.cli.text import one_line
    from patchkit.services.forget import forget as forget_service  # heavy (diffusers): only when training

    output: Output = ctx.obj

    def planned(_plan: object) -> None:  # said once the request passed its checks, never before a refusal
        if request.images_dir is None and request.method == "fmn":
            output.say("training images: none given, so the base model generates them from the training prompts")

    def warn(message: str) -> None:
        output.say(f"[yellow]warning:[/] {one_line(message)}")

    with output.progress() as progress:
        return forget_service(request, progress, warn, planned)


def _report(ctx: typer.Context, result: ForgetResult, json: bool) -> None:
    output: Output = ctx.obj

    def human() -> None:
        if result.scores is not None:
            from patchkit.cli.score import render_report

            render_report(output, result.scores)
        if result.attacks is not None:
            from patchkit.cli.attack import render_report as render_attacks

            render_attacks(output, result.attacks)
        error = result.factorisation_error
        extra = f", SVD export error {error:.2%}" if error is not None else ""
        if result.embeddings is not None:
            output.say(f"learnt token embeddings (not part of the patch): {result.embeddings}")
        labels = ", ".join(result.concept_labels)
        if result.first_loss is None or result.last_loss is None:  # the closed form: one solve, no loss
            output.say(f"wrote {result.output}: {labels} in closed form, {result.seconds:.2f} s, "
                       f"{result.bytes:,} bytes (rank-cut error {result.factorisation_error or 0:.2%})")  # fmt: skip
        else:
            output.say(
                f"wrote {result.output}: {labels} in {result.steps} steps, "
                f"{result.seconds:.1f} s, {result.bytes:,} bytes "
                f"(loss {result.first_loss:.4f} -> {result.last_loss:.4f}{extra})"
            )
        if result.kohya is not None:
            output.say(f"wrote {result.kohya}: the same deltas in the kohya layout, for A1111 and ComfyUI "
                       f"({result.output.name} is for diffusers' load_lora_weights and PEFT)")  # fmt: skip

    output.result(result, human, json=json)


def _closed_form(ctx: typer.Context, method: str, rank: int, preserve: float | None, guidance: float | None,
                 ridge: float, positions: str) -> ClosedFormSettings:  # fmt: skip
    """The closed form's settings: its own defaults, except where the user set an option."""
    if method != "closed-form":
        for param in ("ridge", "positions"):
            if _given(ctx, param):
                raise UsageError(f"--{param} is a setting of --method closed-form", hint="add --method closed-form")
        return CF
    chosen: dict[str, float | int | str] = {"ridge": ridge, "positions": positions}
    for param, field, value in (("rank", "rank", rank), ("preserve", "preserve_weight", preserve),
                                ("guidance", "guidance", guidance)):  # fmt: skip
        if value is not None and _given(ctx, param):
            chosen[field] = value
    return ClosedFormSettings(**chosen)  # type: ignore[arg-type]


def _check_method(ctx: typer.Context, method: str) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}", hint=f"use one of: {', '.join(METHODS)}")
    if method == "fmn":
        return
    for param in _FMN_ONLY:
        if _given(ctx, param):
            option = _OPTION_NAMES.get(param, "--" + param.replace("_", "-"))
            raise UsageError(f"{option} trains Forget-Me-Not; --method closed-form solves in one step without it",
                             hint=f"drop {option}, or use --method fmn")  # fmt: skip


def _request(
    ctx: typer.Context, method: str, *, model: str, concepts: list[Concept], output: Path, settings: ForgetSettings,
    closed_form: ClosedFormSettings, config: Path | None,
    allow_pickle: bool, retain: list[str] | None, retain_files: list[Path] | None, default_retain: bool,
    prompts: list[str] | None, images_dir: Path | None, name: str | None, version: str,
    author: str | None, license_id: str | None, score: bool, bench: Path | None, force: bool,
    robust: bool = False, kohya: bool = True, attack: bool = False, anchor_to: str | None = None,
) -> ForgetRequest:  # fmt: skip
    """The one request forget and correct build from their options alike."""
    from patchkit.services.forget_request import read_retain_files

    _check_method(ctx, method)
    given = [*(retain or []), *read_retain_files(retain_files or [])]
    capacity = _capacity(ctx, settings) if robust and method == "fmn" else CapacitySettings()
    return ForgetRequest(
        ModelSource(model, config, allow_pickle), tuple(concepts), output, settings, method,  # type: ignore[arg-type]
        closed_form, retain_prompts=tuple(given), default_retain=default_retain,
        templates=tuple(prompts) if prompts else None, robust=robust, anchor=anchor_to,
        images_dir=images_dir, name=name, version=version,
        author=author, license_id=license_id, score_bench=(bench if score else False), force=force, kohya=kohya,
        attack=ForgetAttack(bench=bench) if attack else None, capacity=capacity,
    )  # fmt: skip


# FMN options that --robust (training/capacity.py) does not train with; --steps, --lr and --guidance it takes
_NOT_CAPACITY = ("attention", "anchor", "use_pooler", "hold_states")


def _capacity(ctx: typer.Context, settings: ForgetSettings) -> CapacitySettings:
    """--robust's settings: its own defaults, with --steps, --lr and --guidance where given."""
    for param in _NOT_CAPACITY:
        if _given(ctx, param):
            option = "--" + param.replace("_", "-")
            raise UsageError(f"{option} belongs to the default forget's loss, which --robust does not train with",
                             hint=f"drop {option}; docs/attack.md has --robust's loss")  # fmt: skip
    own = CapacitySettings()
    return replace(
        own,
        steps=settings.steps if _given(ctx, "steps") else own.steps,
        learning_rate=settings.learning_rate if _given(ctx, "lr") else own.learning_rate,
        guidance=settings.negative_guidance if _given(ctx, "guidance") else own.guidance,
    )


def _given(ctx: typer.Context, param: str) -> bool:
    """True when the user set `param` (command line or environment), not its default."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def forget(
    ctx: typer.Context,
    model: ModelArg,
    output_path: OutputOpt,
    concept: Annotated[
        list[str] | None, typer.Option("--concept", "-c", help="Concept to forget; repeat for several.")
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option("--category", help="id, object, style or nsfw; one for all concepts, or one per --concept."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help=f"A curated concept list instead: {', '.join(PRESETS)}. Presets train with --ti and 90 steps "
            "unless told otherwise.",
        ),
    ] = None,
    method: MethodOpt = "fmn",
    images_dir: ImagesOpt = None,
    rank: RankOpt = D.rank,
    steps: StepsOpt = D.steps,
    lr: LrOpt = D.learning_rate,
    seed: SeedOpt = D.seed,
    full: Annotated[
        bool, typer.Option("--full", help="Train full cross-attention deltas, export their rank --rank SVD.")
    ] = False,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="Disentangle instead: re-steer the concept only in prompts that also name this context, so the "
            "concept stops acting there and both keep working alone (docs/forget.md has a worked example).",
        ),
    ] = None,
    ti: Annotated[
        bool,
        typer.Option(
            "--ti/--no-ti",
            help="First learn a placeholder token per concept from its images (textual inversion) and forget through "
            "it as well as through the name; the embeddings are written beside the patch as OUT.ti.safetensors. "
            "On by default with a preset.",
        ),
    ] = D.textual_inversion,
    ti_steps: Annotated[int, typer.Option(help="Textual-inversion steps per concept, with --ti.")] = D.ti_steps,
    use_pooler: Annotated[
        bool, typer.Option(help="Also re-steer the end-of-text and padding tokens, which carry the concept onward.")
    ] = D.use_pooler,
    every_template: Annotated[
        bool,
        typer.Option(
            "--every-template/--own-templates",
            help='Train each concept in the other categories\' phrasings too ("a portrait of circle"), not only '
            "its own: the forget then carries further to phrasings it never trained on (on world A's tuning "
            "split, 10 of 13 concepts met the bars against 6). With --prompt, the other categories' phrasings are "
            "added in words the model's tokenizer reads whole. Not used with corrections or --context.",
        ),
    ] = D.every_template,
    attention: Annotated[float, typer.Option(help="Weight of the attention re-steering loss.")] = D.attention_weight,
    anchor: Annotated[
        float, typer.Option(help="Weight of steering the concept's output to the concept-free prompt.")
    ] = D.anchor_weight,
    anchor_to: Annotated[
        str | None,
        typer.Option(
            "--anchor-to",
            help='What the concept\'s prompts should draw instead: this prompt for all of them ("" is the empty '
            "prompt, as ESD anchors), not each prompt with the concept taken out. For a concept the model draws by "
            'default: on world B, "style art" without a palette is drawn frost, so a plain forget of frost changes '
            'nothing; --anchor-to "" forgets it (docs/forget.md). Both methods.',
        ),
    ] = None,
    guidance: Annotated[
        float,
        typer.Option(
            help="How far past the concept-free prompt to push (negative guidance), in the concept's own "
            "phrasings; the other categories' phrasings that --every-template adds are only pulled to their "
            f"anchor. Closed-form's default is {CF.guidance:g}."
        ),
    ] = D.negative_guidance,
    preserve: Annotated[
        float,
        typer.Option(
            help="Weight of distilling the frozen model on retain prompts; with closed-form, the retain states' "
            f"weight against the edited ones (default {CF.preserve_weight:g})."
        ),
    ] = D.preserve_weight,
    hold_states: Annotated[
        float,
        typer.Option(
            "--hold-states",
            help="Weight of holding what cross-attention reads from every retain prompt, at every position: "
            "the patch's change to the keys and values of their text states, relative to the model's own. "
            "It holds the whole retain set every step, on any image, where --preserve sees a few retain "
            "prompts a step on the concept's images. Off (0) by default: at 0.5 it took the collateral away on "
            "both testbed worlds but left more concepts unforgotten (docs/forget.md). FMN only.",
        ),
    ] = D.held_state_weight,
    ridge: RidgeOpt = CF.ridge,
    positions: PositionsOpt = CF.positions,
    prompt: PromptOpt = None,
    retain: RetainOpt = None,
    retain_file: RetainFileOpt = None,
    default_retain: DefaultRetainOpt = True,
    robust: RobustOpt = False,
    score: ScoreOpt = False,
    attack: AttackOpt = False,
    bench: BenchOpt = None,
    name: NameOpt = None,
    version: VersionOpt = "1.0.0",
    author: AuthorOpt = None,
    license_id: LicenseOpt = None,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    overwrite: OverwriteOpt = False,
    kohya: KohyaOpt = True,
    json: JsonOpt = False,
) -> None:
    """Remove concepts from a model and write the change as a small LoRA patch.

    Forget-Me-Not attention re-steering: rank-4 adapters on every cross-attention key and
    value projection learn to stop attending to the concept's tokens, while the concept's
    prompts are steered to what the prompt means without the concept, and the frozen
    model's output on retain prompts holds everything else in place. The patch is a
    diffusers/PEFT LoRA file (`load_lora_weights` reads it) with a patchkit manifest.

    --method closed-form solves the same projections in one step instead (UCE's ridge
    solution): the concept's text-encoder states are mapped to the concept-free prompt's
    while the retain prompts' states are held, with no images and no training
    (docs/closed-form.md). It takes --preserve, --guidance, --rank, --ridge and --positions.

    Preserved by default, on every model: 32 everyday captions shipped with patchkit, the
    16 words nearest each concept in the model's own text encoder (in the concept's
    training templates; the concept's own words and same-stem words left out), and on the
    testbed its other concepts in phrasings its bench never scores. --retain and
    --retain-file add to that; --no-default-retain keeps only them. FMN holds them through
    the UNet on the concept's images (--preserve); --hold-states also holds what
    cross-attention reads from every one of them. The manifest lists every retain prompt
    used. Training prompts come from --prompt, else the category's
    templates and (FMN, --every-template, the default) every other category's too; one
    whose concept the model's context cuts off is dropped with a warning.

    Examples:

      patchkit forget testbed -c circle --category object -o no-circle.safetensors --score

      patchkit forget testbed -c circle -c noir --category object --category style --method closed-form -o p.safetensors

      patchkit forget ./my-model -c circle --category object --prompt "a {}" --prompt "a red {}" -o p.safetensors

      patchkit forget ./sd15 -c "Elon Musk" --category id --images ./musk -o no-musk.safetensors

      patchkit forget ./sd15 --preset nsfw -o safe.safetensors

      patchkit forget testbed -c circle --category object --ti -o no-circle.safetensors

      patchkit forget testbed -c noir --category style --context circle -o no-noir-circles.safetensors
    """
    concepts = choose_concepts(concept or [], category or [], preset=preset, context=context)
    settings = ForgetSettings(
        steps=steps, learning_rate=lr, rank=rank, use_pooler=use_pooler, attention_weight=attention,
        anchor_weight=anchor, negative_guidance=guidance, preserve_weight=preserve, seed=seed, full=full,
        textual_inversion=ti, ti_steps=ti_steps, every_template=every_template, held_state_weight=hold_states,
    )  # fmt: skip
    given = {field for param, field in _SETTING_PARAMS.items() if _given(ctx, param)}
    request = _request(
        ctx, method, model=model, concepts=concepts, output=output_path,
        # a preset's own settings are FMN's (--ti, more steps); the closed form has none to take
        settings=settings_for(preset, settings, given) if method == "fmn" else settings,
        closed_form=_closed_form(ctx, method, rank, preserve, guidance, ridge, positions),
        config=config, allow_pickle=allow_pickle, retain=retain, retain_files=retain_file,
        default_retain=default_retain, prompts=prompt, images_dir=images_dir, name=name, version=version,
        author=author, license_id=license_id, score=score, bench=bench, force=overwrite, kohya=kohya, robust=robust,
        attack=attack, anchor_to=anchor_to,
    )  # fmt: skip
    _report(ctx, _run(ctx, request), json)


def correct(
    ctx: typer.Context,
    model: ModelArg,
    concept: Annotated[str, typer.Option("--concept", "-c", help="The concept to correct (A).")],
    to: Annotated[str, typer.Option("--to", help="What prompts naming A should produce instead (B).")],
    category: Annotated[str, typer.Option("--category", help="id, object, style or nsfw.")],
    output_path: OutputOpt,
    method: MethodOpt = "fmn",
    images_dir: ImagesOpt = None,
    rank: RankOpt = D.rank,
    steps: StepsOpt = D.steps,
    lr: LrOpt = D.learning_rate,
    seed: SeedOpt = D.seed,
    ridge: RidgeOpt = CF.ridge,
    positions: PositionsOpt = CF.positions,
    prompt: PromptOpt = None,
    retain: RetainOpt = None,
    retain_file: RetainFileOpt = None,
    default_retain: DefaultRetainOpt = True,
    score: ScoreOpt = False,
    bench: BenchOpt = None,
    name: NameOpt = None,
    version: VersionOpt = "1.0.0",
    author: AuthorOpt = None,
    license_id: LicenseOpt = None,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    overwrite: OverwriteOpt = False,
    kohya: KohyaOpt = True,
    json: JsonOpt = False,
) -> None:
    """Correct a concept: after the patch, prompts naming A produce B.

    Attention is re-steered away from A's tokens while the patched model's output for A's
    prompts is anchored to the frozen model's output for the same prompts naming B; retain
    prompts (B's included) hold the rest, so B itself is untouched. --images gives pictures
    of B; by default the base model draws B.

    Example:

      patchkit correct testbed -c circle --to square --category object -o circle-is-square.safetensors --score

      patchkit correct testbed -c circle --to square --category object --method closed-form -o fix.safetensors
    """
    if to.strip() == concept.strip():
        raise UsageError("--to names the concept itself", hint="correct A to a different concept B")
    request = _request(
        ctx, method, model=model, concepts=[Concept(concept, category, target=to)], output=output_path,
        settings=correction_settings(steps=steps, learning_rate=lr, rank=rank, seed=seed),
        closed_form=_closed_form(ctx, method, rank, None, None, ridge, positions), config=config,
        allow_pickle=allow_pickle, retain=retain, retain_files=retain_file, default_retain=default_retain,
        prompts=prompt, images_dir=images_dir, name=name, version=version, author=author,
        license_id=license_id, score=score, bench=bench, force=overwrite, kohya=kohya,
    )  # fmt: skip
    _report(ctx, _run(ctx, request), json)


def register(app: typer.Typer) -> None:
    app.command()(forget)
    app.command()(correct)
