"""`patchkit registry`: the local, content-addressed store of patches and their manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import JsonOpt
from patchkit.cli.text import one_line
from patchkit.core.layouts import READERS
from patchkit.errors import TrustError

service = LazyModule("patchkit.services.registry")

app = typer.Typer(
    help="The local patch registry: content-addressed patches, their manifests, signatures and M-Scores.",
    no_args_is_help=True,
)
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="Registry folder (default: PATCHKIT_REGISTRY, else $XDG_DATA_HOME/patchkit/registry)."
    ),
]
RefArg = Annotated[str, typer.Argument(help="NAME@VERSION (NAME alone means its highest version).", show_default=False)]


def _concepts(summary: dict[str, Any]) -> str:
    parts = []
    for c in summary["concepts"]:
        label = f"{c['name']} → {c['target']}" if c.get("target") else c["name"]
        scores = [f"{c['after']:.2f}"] if "after" in c else []
        worst = service.worst_asr_of(c, certified_only=False)
        if worst is not None:
            certified = service.worst_asr_of(c) is not None
            scores.append(f"ASR {worst:.2f}" + ("" if certified else " partial"))
        if scores:
            label += f" ({', '.join(scores)})"
        parts.append(label)
    return ", ".join(parts)


def _table(output: Output, rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=one_line(title))
    table.add_column("patch", no_wrap=True)
    for column in ("concepts (M-Score after, worst ASR)", "categories", "base", "layouts", "signed by"):
        table.add_column(column, overflow="fold")
    for s in rows:
        categories = ", ".join(sorted({c["category"] for c in s["concepts"]}))
        key = f"untrusted key {s['key'][:12]}…" if s.get("key") else "unsigned"
        signer = s.get("trusted_as") or s.get("signed_by") or key
        base = f"{s['family']} {s['base_fingerprint'][:12]}…"
        layouts = ", ".join(s.get("layouts", []))
        cells = (f"{s['name']}@{s['version']}", _concepts(s), categories, base, layouts, signer)
        table.add_row(*(one_line(str(cell)) for cell in cells))  # index text is hand-editable: never markup
    output.table(table)


@app.command("add")
def add(
    ctx: typer.Context,
    patch: Annotated[
        Path, typer.Argument(help="Patch file; PATCH.sig beside it is verified and kept.", show_default=False)
    ],
    name: Annotated[str | None, typer.Option(help="Registry name (default: the manifest's).")] = None,
    version: Annotated[str | None, typer.Option(help="Registry version (default: the manifest's).")] = None,
    require_signed: Annotated[
        bool | None,
        typer.Option(
            "--require-signed/--no-require-signed",
            help="Refuse unsigned or untrusted patches (default: the PATCHKIT_REQUIRE_SIGNED setting).",
        ),
    ] = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Add a patch: validate its manifest and id, verify its signature, store it by content.

    A PEFT patch brings its kohya twin (PATCH.kohya.safetensors, which `forget` writes beside
    it) into the same entry when it has the same patch id and signer; the other layout of an
    entry's patch can also be added later. Adding the same file twice is a no-op; a different
    patch under an existing name@version is refused (exit 8).

    Example: patchkit registry add no-circle.safetensors
    """
    output: Output = ctx.obj
    result = service.add(patch, root=registry, name=name, version=version, require_signed=require_signed)
    entry = result.entry
    verb = "added" if result.added else "already present:"
    layouts = " + ".join(sorted(service.layouts_of(entry)))

    def human() -> None:
        output.say(f"{verb} {entry.ref} ({layouts}; blob {entry.blob[:16]}…)")
        for note in result.notes:
            output.say(f"[yellow]warning:[/] {one_line(note)}")

    output.result(result, human, json=json)


@app.command("list")
def list_(
    ctx: typer.Context,
    concept: Annotated[str | None, typer.Option(help="Only patches that remove or correct this concept.")] = None,
    category: Annotated[str | None, typer.Option(help="Only patches with a concept of this category.")] = None,
    base: Annotated[
        str | None, typer.Option(help="Only patches for this base: a fingerprint, or a model to fingerprint.")
    ] = None,
    signed_by: Annotated[str | None, typer.Option(help="Only patches signed by this trust-store name.")] = None,
    max_asr: Annotated[
        float | None,
        typer.Option(
            "--max-asr",
            min=0.0,
            max=1.0,
            help="Only patches whose every forgotten concept was attacked with the full attack/1 suite at its "
            "standard budget (forget --attack) with a worst-case ASR at most this.",
        ),
    ] = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """List patches, filtered. Example: patchkit registry list --concept circle --base sd15.safetensors

    With --max-asr, a patch with no full attack record is left out, never assumed safe.
    """
    output: Output = ctx.obj
    fingerprint = service.base_fingerprint_of(base) if base else None
    rows = service.entries(registry, concept=concept, category=category, base=fingerprint, signed_by=signed_by)
    unjudged = 0
    if max_asr is not None:
        rows, unjudged = service.within_asr(rows, max_asr)

    def human() -> None:
        _table(output, rows, f"{len(rows)} patches")
        if unjudged:
            output.say(f"note: {unjudged} patches left out: no full attack/1 record to judge them by "
                       "(run patchkit forget --attack, or patchkit attack)")  # fmt: skip

    output.result(rows, human, json=json)


@app.command("search")
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Words to find in names, concepts, descriptions, authors.")],
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Find patches by any word. Example: patchkit registry search noir"""
    output: Output = ctx.obj
    rows = service.search(text, registry)
    output.result(rows, lambda: _table(output, rows, f"{len(rows)} patches matching {text!r}"), json=json)


@app.command("show")
def show(ctx: typer.Context, ref: RefArg, registry: RegistryOpt = None, json: JsonOpt = False) -> None:
    """Show one entry's manifest. Example: patchkit registry show no-circle@1.0.0"""
    from patchkit.cli.show import render_manifest

    output: Output = ctx.obj
    entry = service.find(ref, registry)

    def human() -> None:
        render_manifest(output, entry.record["manifest"], title=f"{entry.ref} (blob {entry.blob[:16]}…)")
        signer = entry.record["signed_by"] or ("a key not in the trust store" if entry.record["signed"] else "nobody")
        output.say(one_line(f"signed by {signer}; added {entry.record['added_at']}"))
        for layout, blob in sorted(service.layouts_of(entry).items()):
            output.say(f"{layout} layout (blob {blob[:16]}…): read by {READERS[layout]}")

    output.result({"ref": entry.ref, "blob": entry.blob, **entry.record}, human, json=json)


@app.command("rm")
def rm(ctx: typer.Context, ref: RefArg, registry: RegistryOpt = None, json: JsonOpt = False) -> None:
    """Remove NAME@VERSION (its blob stays until `registry gc`). Example: patchkit registry rm no-circle@1.0.0"""
    output: Output = ctx.obj
    entry = service.remove(ref, registry)
    removed = {"removed": entry.ref, "blob": entry.blob}
    output.result(removed, f"removed {entry.ref}; run patchkit registry gc to free its blob", json=json)


@app.command("gc")
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; delete nothing.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete blobs no entry references and temporaries of killed writers. Example: patchkit registry gc --dry-run"""
    output: Output = ctx.obj
    plan = service.gc(registry, dry_run=dry_run)
    verb = "removed" if plan.executed else "would remove"
    message = f"{verb} {len(plan.blobs)} blobs ({plan.bytes:,} bytes) and {len(plan.temporaries)} temporaries"
    output.result(plan, message, json=json)


@app.command("export")
def export(
    ctx: typer.Context,
    ref: RefArg,
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder to copy the patch (and its .sig) into.")],
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Copy an entry out: NAME-VERSION.safetensors (PEFT layout, for diffusers) and, when the
    entry holds it, NAME-VERSION.kohya.safetensors (for A1111 and ComfyUI), each with its .sig.

    Example: patchkit registry export no-circle@1.0.0 -o dist/
    """
    output: Output = ctx.obj
    targets = service.export(ref, out, registry)

    def human() -> None:
        for target in targets:
            output.out.print(str(target), highlight=False)

    output.result({"output": targets[0], "outputs": targets}, human, json=json)


@app.command("verify")
def verify(ctx: typer.Context, registry: RegistryOpt = None, json: JsonOpt = False) -> None:
    """Re-hash every blob and check every entry and index line; exit 7 on any corruption."""
    output: Output = ctx.obj
    report = service.verify_registry(registry)

    def human() -> None:
        for note in report.notes:
            output.say(f"note: {one_line(note)}")
        for problem in report.problems:
            output.say(f"[red]problem:[/] {one_line(problem)}")
        if report.ok:
            output.say(f"[green]ok[/]: {report.blobs_checked} blobs re-hashed, {report.entries} entries")

    output.result(report, human, json=json)
    if not report.ok:
        raise TrustError(f"{len(report.problems)} problems in {report.root}: {report.problems[0]}",
                         hint="remove the damaged entries (registry rm) and add them again")  # fmt: skip


@app.command("reindex")
def reindex(ctx: typer.Context, registry: RegistryOpt = None, json: JsonOpt = False) -> None:
    """Rebuild the index from the entries on disk, after a restore or a crash. Example: patchkit registry reindex"""
    output: Output = ctx.obj
    count = service.reindex(registry)
    output.result({"entries": count}, f"indexed {count} entries", json=json)


@app.command("push")
def push(
    ctx: typer.Context,
    ref: RefArg,
    repo: Annotated[str, typer.Option("--repo", help="Hub repo id ORG/NAME (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Publish an entry to the Hugging Face Hub: the patch, its signature and a model card, in one commit.

    Needs HF_TOKEN (or huggingface-cli login). Example: patchkit registry push no-circle@1.0.0 --repo my-team/no-circle
    """
    from patchkit.services.hub import push as push_service

    output: Output = ctx.obj
    result = push_service(ref, repo, root=registry, private=private)
    output.result(result, f"pushed {', '.join(result.files)} to https://huggingface.co/{result.repo}", json=json)


@app.command("pull")
def pull(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="ORG/NAME[@REVISION] on the Hub.", show_default=False)],
    registry: RegistryOpt = None,
    json: JsonOpt = False,
) -> None:
    """Fetch a patch from the Hub (through its cache) and add it. Example: patchkit registry pull my-team/no-circle"""
    from patchkit.services.hub import pull as pull_service

    output: Output = ctx.obj
    result = pull_service(spec, root=registry)
    pulled = {"ref": result.entry.ref, "blob": result.entry.blob, "added": result.added}
    output.result(pulled, f"{'added' if result.added else 'already present:'} {result.entry.ref}", json=json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="registry")
