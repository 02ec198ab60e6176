"""`patchkit import`: wrap another tool's LoRA or edited weights as a patchkit patch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli.console import Output
from patchkit.cli.options import (
    AllowPickleOpt,
    AuthorOpt,
    ConfigOpt,
    JsonOpt,
    KohyaOpt,
    LicenseOpt,
    NameOpt,
    OverwriteOpt,
    VersionOpt,
)
from patchkit.cli.text import one_line


def import_(
    ctx: typer.Context,
    source: Annotated[
        Path,
        typer.Argument(
            help="A diffusers/PEFT or kohya LoRA, or a UNet state dict with edited weights (ESD, UCE, ...).",
            show_default=False,
        ),
    ],
    base: Annotated[str, typer.Option("--base", help="The model SOURCE was made from (a folder, file, Hub id).")],
    concept: Annotated[list[str], typer.Option("--concept", "-c", help="What SOURCE removes; repeatable.")],
    category: Annotated[str, typer.Option("--category", help="The concepts' category: id, object, style or nsfw.")],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Patch file to write (.safetensors).")],
    method: Annotated[
        str | None, typer.Option("--method", help="The tool that made SOURCE (esd, uce, spm, mace, ...): recorded.")
    ] = None,
    rank: Annotated[
        int | None,
        typer.Option("--rank", help="Edited weights only: the SVD rank (default: the least within --max-error)."),
    ] = None,
    max_error: Annotated[
        float,
        typer.Option("--max-error", help="Edited weights only: the largest relative error one module may have."),
    ] = 0.01,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    name: NameOpt = None,
    version: VersionOpt = "1.0.0",
    author: AuthorOpt = None,
    license_id: LicenseOpt = None,
    kohya: KohyaOpt = True,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Wrap a LoRA or an eraser's edited weights as a patchkit patch bound to BASE.

    Erasure results from other tools (ESD, UCE, SPM, MACE, a kohya or civitai LoRA) become
    patches with a manifest, so they can be scored, attacked, signed, registered, merged,
    stacked and applied like any other. A LoRA keeps its factors; edited weights become their
    difference from BASE, factored by truncated SVD, and the error that costs is printed (and
    recorded). A key that BASE does not have, or a shape that does not match, is refused with
    the first one named.

    Examples:
      patchkit import esd-vangogh.safetensors --base sd15 -c "van gogh" --category style --method esd -o esd.safetensors
      patchkit import civitai-lora.safetensors --base sd15 -c gore --category nsfw -o no-gore.safetensors
    """
    from patchkit.models.refs import ModelSource
    from patchkit.services.import_lora import ImportRequest, import_lora

    output: Output = ctx.obj
    request = ImportRequest(
        source=source, model=ModelSource(base, config, allow_pickle), concepts=concept, category=category,
        output=output_path, method=method, rank=rank, max_error=max_error, name=name, version=version,
        author=author, license_id=license_id, allow_pickle=allow_pickle, kohya=kohya, force=overwrite,
    )  # fmt: skip

    def say(message: str) -> None:
        warning = message.startswith("warning: ")
        text = one_line(message.removeprefix("warning: "))
        output.say(f"[yellow]warning:[/] {text}" if warning else text)

    result = import_lora(request, say=say)

    def human() -> None:
        output.say(f"wrote {one_line(str(result.output))}: {result.modules} modules at rank {result.rank} from a "
                   f"{result.kind} source; patch id {result.patch_id[:23]}…")  # fmt: skip
        if result.kohya is not None:
            output.say(f"wrote {one_line(str(result.kohya))}: the same patch in the kohya layout (A1111, ComfyUI)")
        output.say("its M-Scores are not measured yet: patchkit score BASE --patch PATCH, then patchkit attack")

    output.result(result, human, json=json)


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
