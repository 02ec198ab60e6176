"""Publishing registry entries to the Hugging Face Hub and fetching them back, through huggingface_hub itself.

push uploads the patch, its signature and a model card in one commit (HfApi.create_commit);
pull goes through the Hub cache (snapshot_download), so HF_HUB_OFFLINE and a warm cache work
as they do for models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.errors import InputError, NotCachedError, OutputError, UsageError
from patchkit.services import registry as registry_service
from patchkit.services.registry import AddResult
from patchkit.store.registry import Entry

_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # a Hub repo id: ORG/NAME
CARD_TAGS = ["lora", "patchkit", "forget-me-not", "concept-removal"]


def _score(concept: dict[str, Any]) -> tuple[str, str]:
    prompt = concept.get("mscore", {}).get("prompt", {})
    before, after = prompt.get("before"), prompt.get("after")
    return (f"{before:.2f}" if before is not None else "–", f"{after:.2f}" if after is not None else "–")


def model_card(entry: Entry) -> str:
    """The README.md pushed beside a patch: card metadata, what it does, its M-Scores, how to check it."""
    from huggingface_hub import ModelCardData

    manifest = entry.record["manifest"]
    base = manifest["base"]
    categories = sorted({c["category"] for c in manifest["concepts"]})
    data = ModelCardData(
        base_model=base["reference"] if _REPO.fullmatch(base["reference"]) else None,
        base_model_relation="adapter",
        library_name="diffusers",
        license=manifest.get("license"),
        tags=CARD_TAGS + categories,
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {entry.name} {entry.version}",
        "",
        "A [patchkit](https://github.com/patchkit/patchkit) Forget-Me-Not patch: a LoRA in the diffusers/PEFT "
        "layout that changes only cross-attention.",
        "",
        "| concept | category | action | M-Score before | M-Score after |",
        "|---|---|---|---:|---:|",
    ]
    for c in manifest["concepts"]:
        action = f"correct to {c['target']}" if c["action"] == "correct" else "forget"
        before, after = _score(c)
        lines.append(f"| {c['name']} | {c['category']} | {action} | {before} | {after} |")
    lines += [
        "",
        f"- base model: `{base['reference']}` ({base['family']}, {base['dtype']})",
        f"- base fingerprint: `{base['fingerprint']}`",
        f"- patch id: `{manifest['patch_id']}`",
        f"- made by: {manifest['tool']}, {manifest['created_at']}",
    ]
    if manifest.get("scores_inherited"):
        lines.append("- M-Scores copied from the merged parents; not yet measured on this patch")
    lines += [
        "",
        "```",
        f"patchkit registry pull ORG/NAME && patchkit verify {entry.name}.safetensors --trust-store",
        f"patchkit apply BASE {entry.name}.safetensors -o PATCHED",
        "```",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class PushResult:
    repo: str
    files: list[str]
    commit: Any

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "files": self.files}


def push(ref: str, repo: str, *, root: Path | None = None, api: Any = None, private: bool = False) -> PushResult:
    """One commit with NAME.safetensors, its .sig when signed, and README.md. `api` is an HfApi (a seam for tests)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not _REPO.fullmatch(repo):
        raise UsageError(f"{repo!r} is not a Hub repo id", hint="use ORG/NAME, for example my-team/no-circle")
    entry = registry_service.find(ref, root)
    blob = registry_service.blob_for(ref, root)
    api = api or HfApi()
    filename = f"{entry.name}.safetensors"
    operations = [CommitOperationAdd(path_in_repo=filename, path_or_fileobj=str(blob))]
    sig = blob.with_name(blob.name + ".sig")
    if sig.is_file():
        operations.append(CommitOperationAdd(path_in_repo=filename + ".sig", path_or_fileobj=str(sig)))
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=model_card(entry).encode()))
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.create_commit(repo, operations, commit_message=f"patchkit: {entry.ref}")
    except OfflineModeIsEnabled as exc:
        raise OutputError(
            f"cannot push {entry.ref} to {repo}: HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE where the Hub is reachable",
        ) from exc
    except (HfHubHTTPError, OSError) as exc:  # refused, unauthorised, or no network
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise OutputError(
            f"cannot push {entry.ref} to {repo}: {exc.__class__.__name__}: {first_line}",
            hint="check the network and your token (hf auth login), then push again",
        ) from exc
    return PushResult(repo, [op.path_in_repo for op in operations], commit)


def pull(spec: str, *, root: Path | None = None, require_signed: bool | None = None,
         cache_dir: Path | None = None) -> AddResult:  # fmt: skip
    """ORG/NAME[@REVISION] from the Hub (or its cache; `cache_dir` overrides HF_HUB_CACHE) into the registry."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = spec.partition("@")
    if not _REPO.fullmatch(repo):
        raise UsageError(f"{repo!r} is not a Hub repo id", hint="use ORG/NAME[@REVISION]")
    patterns = ["*.safetensors", "*.safetensors.sig", "README.md"]
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, allow_patterns=patterns, cache_dir=cache_dir))
    except LocalEntryNotFoundError as exc:
        hint = "set HF_TOKEN and check the network, or pull where the Hub is reachable"
        raise NotCachedError(f"{spec} is not in the Hugging Face cache and the Hub cannot be reached", hint) from exc
    patches = sorted(folder.glob("*.safetensors"))
    if len(patches) != 1:
        raise InputError(f"{spec} holds {len(patches)} .safetensors files, not one patch",
                         hint="pull repos that patchkit registry push wrote")  # fmt: skip
    return registry_service.add(patches[0], root=root, require_signed=require_signed)
