"""`patchkit show`: what a patch does, to which base, and how well."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import JsonOpt
from patchkit.cli.text import one_line

patch_file = LazyModule("patchkit.io.patch_file")
signatures = LazyModule("patchkit.io.signatures")


def _score(entry: dict[str, Any]) -> str:
    score = entry.get("mscore")
    if not score:
        return "not scored"
    prompt = score["prompt"]
    after = prompt.get("after")
    return f"{prompt['before']:.2f} → {after:.2f}" if after is not None else f"{prompt['before']:.2f}"


def _attack(entry: dict[str, Any]) -> str:
    record = entry.get("attack")
    if not record:
        return "not attacked"
    if record.get("worst_asr") is None:
        return "no attack ran"
    label = f"{record['worst_asr']:.2f} ({record['worst_attack']})"
    ran = [a for a, asr in record.get("asr", {}).items() if asr is not None]
    return label if record.get("standard_budget") else f"{label}, small budget: {len(ran)} attacks"


def render_manifest(output: Output, manifest: dict[str, Any], *, title: str) -> None:
    """The manifest as two tables: the patch, then its concepts. Every value comes from the file
    (hostile until shown otherwise): shown as one line of text, never as markup."""
    about = Table(title=one_line(title), show_header=False)
    about.add_column("field", style="bold")
    about.add_column("value", overflow="fold")
    base = manifest["base"]
    rows = [
        ("name", f"{manifest['name']}@{manifest['version']}"),
        ("patch id", manifest["patch_id"]),
        ("base", f"{base['reference']} ({base['family']}, {base['dtype']})"),
        ("base fingerprint", base["fingerprint"]),
        ("method", manifest["method"]["name"]),
        ("created", f"{manifest['created_at']} by {manifest['tool']}"),
    ]
    for key in ("author", "license", "description"):
        if manifest.get(key):
            rows.append((key, manifest[key]))
    if manifest.get("collateral"):
        rows.append(("collateral", ", ".join(f"{k} {v:+.3f}" for k, v in manifest["collateral"].items())))
    for parent in manifest.get("parents", []):
        rows.append(("parent", f"{parent['name']}@{parent['version']} {parent['patch_id'][:19]}…"))
    if manifest.get("scores_inherited"):
        rows.append(("scores", "copied from the parents: run `patchkit score` on this patch"))
    for field, value in rows:
        about.add_row(field, one_line(str(value)))
    output.table(about)
    concepts = Table(title="concepts")
    for column in ("concept", "category", "action", "M-Score (prompt)", "worst-case ASR", "bench"):
        concepts.add_column(column)
    for c in manifest["concepts"]:
        action = c["action"] + (f" → {c['target']}" if c.get("target") else "")
        bench = c["mscore"]["bench"] if c.get("mscore") else (c.get("attack") or {}).get("bench", "")
        cells = (c["name"], c["category"], action, _score(c), _attack(c), bench)
        concepts.add_row(*(one_line(str(cell)) for cell in cells))
    output.table(concepts)


def show(
    ctx: typer.Context,
    patch: Annotated[Path, typer.Argument(help="A patch made by patchkit (.safetensors).", show_default=False)],
    json: JsonOpt = False,
) -> None:
    """Show a patch's manifest: concepts, M-Scores, base, method and provenance.

    The manifest is validated against schemas/manifest.schema.json (older versions are
    migrated first). This does not check a signature: `patchkit verify` does.

    Example:

      patchkit show no-circle.safetensors --json
    """
    output: Output = ctx.obj
    parsed = patch_file.read_patch(patch)

    def human() -> None:
        render_manifest(output, parsed.manifest, title=str(patch))  # escaped there
        signed = signatures.signature_path_for(patch).is_file()
        if not parsed.id_matches:
            output.say("[red]the tensors do not match the manifest's patch id[/]: the file was altered")
        output.say(f"signature: {'present, check it with patchkit verify' if signed else 'none'}")

    output.result({**parsed.manifest, "patch_id_matches": parsed.id_matches}, human, json=json)


def register(app: typer.Typer) -> None:
    app.command()(show)
