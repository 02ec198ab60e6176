"""`patchkit export`: a patch in another LoRA key layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli.console import Output
from patchkit.cli.options import JsonOpt, OverwriteOpt
from patchkit.cli.text import one_line
from patchkit.core.layouts import LAYOUTS, READERS


def _layouts() -> list[str]:
    return list(LAYOUTS)


def export(
    ctx: typer.Context,
    patch: Annotated[Path, typer.Argument(help="A patch made by patchkit.", show_default=False)],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="kohya (A1111, ComfyUI) or peft (diffusers load_lora_weights).", autocompletion=_layouts
        ),
    ],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="File to write (.safetensors).")],
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Convert a patch between the PEFT layout (diffusers) and the kohya layout (A1111, ComfyUI).

    kohya files get `lora_unet_*` keys with lora_down/lora_up and an `.alpha` per module; the
    manifest comes along with `format.keys` set and the same patch id (it does not depend on
    the layout), so `apply`, `merge`, `show`, `verify` and the registry treat both as one
    patch. The delta is unchanged (a test).

    Example: patchkit export no-circle.safetensors --format kohya -o no-circle-kohya.safetensors
    """
    from patchkit.services.export import export as export_service

    output: Output = ctx.obj
    result = export_service(patch, fmt, output_path, force=overwrite)
    message = (f"wrote {one_line(str(result.output))}: {result.tensors} tensors in the {result.format} layout, "
               f"{result.bytes:,} bytes; read by {READERS[result.format]}")  # fmt: skip
    output.result(result, message, json=json)


def register(app: typer.Typer) -> None:
    app.command()(export)
