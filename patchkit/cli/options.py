"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A diffusers folder, a single-file .safetensors (needs --config), a cached Hub id, or 'testbed'.",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Local diffusers pipeline folder whose configs describe a single-file checkpoint."),
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Read .ckpt/.bin/.pt pickles with torch.load(weights_only=True)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
# one name, one meaning on every command: --overwrite replaces an output; only apply has --ignore-base
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]

KohyaOpt = Annotated[
    bool,
    typer.Option(
        "--kohya/--no-kohya",
        help="Also write OUT.kohya.safetensors, the same deltas in the layout A1111 and ComfyUI load (the same "
        "patch id). OUT itself is the diffusers/PEFT layout.",
    ),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Patch name in the manifest (default from concepts).")]
VersionOpt = Annotated[str, typer.Option("--version", help="Patch version in the manifest.")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="Author recorded in the manifest.")]
LicenseOpt = Annotated[str | None, typer.Option("--license", help="License recorded in the manifest (SPDX id).")]
