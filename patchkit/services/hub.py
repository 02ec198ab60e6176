"""Publishing registry entries to the Hugging Face Hub and fetching them back, through huggingface_hub itself.

push uploads the patch in each layout the registry holds, their signatures and a model card
in one commit (HfApi.create_commit);
pull goes through the Hub cache (snapshot_download), so HF_HUB_OFFLINE and a warm cache work
as they do for models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.hub_card import PIPELINE_TAG, card_problems, card_tags, hub_base_model, hub_license
from patchkit.core.layouts import READERS, file_name, is_kohya_file_name
from patchkit.core.patch_metadata import base_display_name
from patchkit.errors import InputError, NotCachedError, OutputError, UsageError
from patchkit.services import registry as registry_service
from patchkit.services.registry import AddResult
from patchkit.store.registry import Entry

_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # a Hub repo id: ORG/NAME


def _score(concept: dict[str, Any]) -> tuple[str, str]:
    prompt = concept.get("mscore", {}).get("prompt", {})
    before, after = prompt.get("before"), prompt.get("after")
    return (f"{before:.2f}" if before is not None else "–", f"{after:.2f}" if after is not None else "–")


def _cell(text: object) -> str:
    """Text for a Markdown table cell: one line, no cell breaks, no code spans opened."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")


def model_card(entry: Entry, repo: str = "ORG/NAME") -> str:
    """The README.md pushed beside a patch, built with huggingface_hub's ModelCard: Hub metadata
    that passes the Hub's rules (core/hub_card.py), what the patch does, its files and which tools
    read each, and commands that work as written."""
    from huggingface_hub import ModelCard, ModelCardData

    manifest = entry.record["manifest"]
    base = manifest["base"]
    layouts = sorted(registry_service.layouts_of(entry))
    files = {layout: file_name(entry.name, layout) for layout in layouts}
    base_model = hub_base_model(base)
    license_ = hub_license(manifest.get("license"))
    data = ModelCardData(
        base_model=base_model,
        base_model_relation="adapter" if base_model else None,
        library_name="diffusers",
        pipeline_tag=PIPELINE_TAG,
        tags=card_tags(base["family"], sorted({c["category"] for c in manifest["concepts"]})),
        license=license_.get("license"),
        license_name=license_.get("license_name"),
    )
    problems = card_problems(data.to_dict())
    if problems:  # our own rules broken by our own card: a bug, said plainly
        raise UsageError(f"the model card for {entry.ref} breaks the Hub's rules: {problems[0]}")
    shown = _cell(base_display_name(base["reference"], hub=base_model is not None))
    base_name = base_model or f"path/to/{shown}"
    lines = [
        f"# {_cell(entry.name)} {entry.version}",
        "",
        f"A [patchkit](https://github.com/patchkit/patchkit) patch ({_cell(manifest['method']['name'])}): a LoRA "
        "that changes only cross-attention, so that the base model no longer produces the concepts below.",
        "",
        "| concept | category | action | M-Score before | M-Score after |",
        "|---|---|---|---:|---:|",
    ]
    for c in manifest["concepts"]:
        action = f"correct to {_cell(c['target'])}" if c["action"] == "correct" else "forget"
        before, after = _score(c)
        lines.append(f"| {_cell(c['name'])} | {c['category']} | {action} | {before} | {after} |")
    if manifest.get("scores_inherited"):
        lines += ["", "M-Scores are copied from the merged parents; they were not measured on this patch."]
    lines += ["", "## Files", "", "| file | layout | read by |", "|---|---|---|"]
    lines += [f"| `{files[layout]}` | {layout} | {READERS[layout]} |" for layout in layouts]
    lines += [
        "",
        f"- base model: `{shown}` ({base['family']}, {base['dtype']})"
        + ("" if base_model else "; not a Hub model: use your copy with this fingerprint"),
        f"- base fingerprint: `{base['fingerprint']}`",
        f"- patch id: `{manifest['patch_id']}` (the same for every layout)",
        f"- made by: {_cell(manifest['tool'])}, {manifest['created_at']}",
        "",
        "## Use",
        "",
    ]
    if "peft" in files:
        lines += [
            "diffusers:",
            "",
            "```python",
            "from diffusers import AutoPipelineForText2Image",
            "",
            f'pipe = AutoPipelineForText2Image.from_pretrained("{base_name}")',
            f'pipe.load_lora_weights("{repo}", weight_name="{files["peft"]}")',
            "```",
            "",
        ]
    if "kohya" in files:
        stem = files["kohya"].removesuffix(".safetensors")
        lines += [
            f"ComfyUI: put `{files['kohya']}` in `models/loras` and load it with a LoraLoader node. "
            f"A1111: put it in `models/Lora` and add `<lora:{stem}:1>` to the prompt.",
            "",
        ]
    lines += [
        "patchkit (verifies the signature against your trust store, then bakes the patch into the base):",
        "",
        "```",
        f"patchkit registry pull {repo}",
        f"patchkit apply {base_name} {entry.ref} -o PATCHED",
        "```",
        "",
    ]
    card = ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines))
    return str(card)


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
    api = api or HfApi()
    operations = []
    for layout in sorted(registry_service.layouts_of(entry)):
        blob = registry_service.blob_for(ref, root, layout=layout)  # checked: its bytes hash to its address
        filename = file_name(entry.name, layout)
        operations.append(CommitOperationAdd(path_in_repo=filename, path_or_fileobj=str(blob)))
        sig = blob.with_name(blob.name + ".sig")
        if sig.is_file():
            operations.append(CommitOperationAdd(path_in_repo=filename + ".sig", path_or_fileobj=str(sig)))
    card = model_card(entry, repo).encode()
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.create_commit(repo, operations, commit_message=f"patchkit: {entry.ref}")
    except OfflineModeIsEnabled as exc:
        raise OutputError(
            f"cannot push {entry.ref} to {repo}: HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE where the Hub is reachable",
        ) from exc
    except Exception as exc:  # refused, unauthorised, or no network: whichever HTTP client raised it
        if not isinstance(exc, (HfHubHTTPError, OSError)) and not _from_http_client(exc):
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise OutputError(
            f"cannot push {entry.ref} to {repo}: {exc.__class__.__name__}: {first_line}",
            hint="check the network and your token (hf auth login), then push again",
        ) from exc
    return PushResult(repo, [op.path_in_repo for op in operations], commit)


def _from_http_client(exc: BaseException) -> bool:
    """An error of the HTTP library huggingface_hub runs on (httpx2 today, httpx or requests before),
    none of which derive from OSError: a connection refused is one of these, not a bug."""
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3", "httpcore")


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
    files = sorted(folder.glob("*.safetensors"))
    peft = [f for f in files if not is_kohya_file_name(f.name)]
    # one patch: NAME.safetensors and/or NAME.kohya.safetensors (add takes the twin from beside it)
    if len(peft) > 1 or len(files) - len(peft) > 1 or not files:
        raise InputError(f"{spec} holds {len(files)} .safetensors files, not one patch in one or two layouts",
                         hint="pull repos that patchkit registry push wrote")  # fmt: skip
    return registry_service.add(peft[0] if peft else files[0], root=root, require_signed=require_signed)
