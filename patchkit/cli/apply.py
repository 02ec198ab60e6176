"""`patchkit apply` and `patchkit revert`: fuse patches into a checkpoint, and take them out again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import AllowPickleOpt, ConfigOpt, JsonOpt, ModelArg
from patchkit.cli.text import one_line

apply_service = LazyModule("patchkit.services.apply")
sources_service = LazyModule("patchkit.services.sources")

OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Where to write: a folder for a folder base, "
                                      "a .safetensors file for a single-file base.")]  # fmt: skip
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")]
CopyOpt = Annotated[
    bool, typer.Option("--copy", help="Copy untouched weight files of a folder instead of hard-linking them.")
]


def apply(
    ctx: typer.Context,
    base: ModelArg,
    patches: Annotated[
        list[Path],
        typer.Argument(
            help="Patch files, registry NAME@VERSION refs and *.stack.json stacks, applied in order.",
            show_default=False,
        ),
    ],
    output_path: OutOpt,
    scale: Annotated[float, typer.Option("--scale", help="Multiply every patch's delta by this.")] = 1.0,
    config: ConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    ignore_base: Annotated[
        bool, typer.Option("--ignore-base", help="Apply even where a patch was made for another base fingerprint.")
    ] = False,
    overwrite: OverwriteOpt = False,
    copy: CopyOpt = False,
    revert_data: Annotated[
        Path | None,
        typer.Option(
            "--revert-data",
            help="Also write the original tensors to this separate file, for `patchkit revert`. Keep it private: "
            "whoever holds it can restore what the patches removed. OUT itself never carries them.",
        ),
    ] = None,
    require_signed: Annotated[
        bool | None,
        typer.Option(
            "--require-signed/--no-require-signed",
            help="Refuse patches without a valid signature from a trusted key "
            "(default: the PATCHKIT_REQUIRE_SIGNED setting).",
        ),
    ] = None,
    no_fsync: Annotated[
        bool,
        typer.Option(
            "--no-fsync",
            help="Skip flushing OUT to disk before the rename: faster, still atomic if patchkit dies, but a power "
            "loss may leave a damaged OUT. For scratch outputs only.",
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Fuse patches into a checkpoint's weights and write a patched copy in the same layout.

    A diffusers folder gives a folder (untouched weight files hard-linked, [bold]--copy[/] to copy);
    a single .safetensors file gives a single file of the same dtype. Deltas are fused in
    float32 and cast once. Every patch's base fingerprint must match BASE ([bold]--ignore-base[/]
    to override). OUT records what was applied (safetensors metadata `patchkit.applied`, and
    patchkit.json beside a folder) but holds nothing from which the base can be restored: it
    is safe to release. [bold]--revert-data FILE[/] keeps the original tensors in a separate
    file, bound to OUT, with which [bold]patchkit revert[/] restores the base bit for bit. The
    write is atomic and durable: an interrupted apply leaves no OUT, and OUT is on disk
    before it takes its name.

    Examples:

      patchkit apply testbed no-circle.safetensors -o safe-testbed

      patchkit apply testbed no-circle.safetensors -o safe-testbed --revert-data private/safe-testbed.revert.safetensors

      patchkit apply sd15.safetensors no-circle.safetensors no-noir.safetensors -o sd15-safe.safetensors

      patchkit apply sd15.safetensors release.stack.json -o sd15-release.safetensors
    """
    output: Output = ctx.obj
    sources, expected = sources_service.sources_for(patches, scale)
    with output.progress() as progress:
        result = apply_service.apply(
            base, sources, output_path, config=config, allow_pickle=allow_pickle, ignore_base=ignore_base,
            overwrite=overwrite, link=not copy, revert_data=revert_data, require_signed=require_signed,
            expected_fingerprint=expected, durable=not no_fsync,
            progress=progress,
        )  # fmt: skip
    for patch in result.patches:
        if patch.warning:
            output.say(f"[yellow]warning:[/] {one_line(patch.warning)}")
    for name in result.forced_mismatch:
        output.say(f"[yellow]warning:[/] {one_line(name)} was made for another base; applied because of --ignore-base")
    for message in result.interference:
        output.say(f"[yellow]warning:[/] {one_line(message)}")

    def human() -> None:
        table = Table(title=one_line(f"applied to {base}"))
        for column in ("patch", "id", "scale"):
            table.add_column(column)
        for p in result.patches:
            table.add_row(one_line(f"{p.name}@{p.version}"), p.patch_id[:19] + "…", f"{p.scale:g}")
        output.table(table)
        output.say(
            f"wrote {one_line(str(result.output))} in {result.seconds:.2f} s: {result.touched} tensors changed, "
            f"{result.bytes_written:,} bytes written, {result.linked_files} files linked\n"
            f"base {result.base_fingerprint}\nout  {result.output_fingerprint}"
        )
        readers = ("A1111, ComfyUI and diffusers (from_single_file)" if result.layout == "single_file"
                   else "diffusers (from_pretrained)")  # fmt: skip
        output.say(f"it loads in {readers}; it holds no original tensors, so it cannot be reverted without "
                   "a revert file")  # fmt: skip

    output.result(result, human, json=json)


def revert(
    ctx: typer.Context,
    patched: Annotated[str, typer.Argument(help="A checkpoint written by patchkit apply.", show_default=False)],
    output_path: OutOpt,
    config: ConfigOpt = None,
    overwrite: OverwriteOpt = False,
    copy: CopyOpt = False,
    revert_data: Annotated[
        Path | None,
        typer.Option("--revert-data", help="The revert file `patchkit apply --revert-data` wrote for PATCHED."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Restore the base a patched checkpoint was made from, bit for bit, from its revert file.

    A patched checkpoint never carries the original tensors; `apply --revert-data FILE` keeps
    them apart, and that FILE is refused for any other output. The result is checked against
    the base fingerprint recorded at apply time.

    Example:

      patchkit revert sd15-safe.safetensors --revert-data private/sd15-safe.revert.safetensors -o sd15-again.safetensors
    """
    output: Output = ctx.obj
    result = apply_service.revert(
        patched, output_path, revert_data=revert_data, config=config, link=not copy, overwrite=overwrite
    )
    names = ", ".join(f"{p['name']}@{p['version']}" for p in result.patches)
    message = f"wrote {result.output}: removed {names}; fingerprint {result.base_fingerprint} (the base)"
    output.result(result, message, json=json)


def register(app: typer.Typer) -> None:
    app.command()(apply)
    app.command()(revert)
