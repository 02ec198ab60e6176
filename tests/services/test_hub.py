"""Hub publishing through huggingface_hub's own seams: the card exactly, the commit plan, a cached pull."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi
from safetensors.torch import load_file

from patchkit.errors import NotCachedError
from patchkit.io.patch_file import read_patch
from patchkit.services import hub, registry
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.patches import write_patch


class RecordingApi(HfApi):
    """HfApi with its two network calls replaced by a record of what would have been sent."""

    def __init__(self) -> None:
        super().__init__(token=False)
        self.calls: list[tuple[str, Any]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append(("create_repo", (repo_id, kwargs)))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id: str, operations: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append(("create_commit", (repo_id, list(operations), kwargs)))
        return "commit-info"


@pytest.fixture
def scored_entry(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    patch = synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "p.safetensors", concept="circle")
    manifest = dict(read_patch(patch).manifest, name="no-circle", version="1.0.0", license="mit")
    manifest["base"] = dict(manifest["base"], reference="runwayml/stable-diffusion-v1-5")
    score = {"bench": "testbed", "definition": "mscore/1", "prompt": {"before": 0.97, "after": 0.03}}
    manifest["concepts"] = [dict(manifest["concepts"][0], mscore=score)]
    write_patch(patch, load_file(str(patch)), manifest, family="sd1", rank=4, resolution=64, base_name="x")
    return patch, registry.add(patch).entry


def test_model_card_is_exact(scored_entry):
    _, entry = scored_entry
    m = entry.record["manifest"]
    expected = f"""---
base_model: runwayml/stable-diffusion-v1-5
library_name: diffusers
license: mit
tags:
- lora
- patchkit
- forget-me-not
- concept-removal
- object
base_model_relation: adapter
---

# no-circle 1.0.0

A [patchkit](https://github.com/patchkit/patchkit) Forget-Me-Not patch: a LoRA in the diffusers/PEFT layout that \
changes only cross-attention.

| concept | category | action | M-Score before | M-Score after |
|---|---|---|---:|---:|
| circle | object | forget | 0.97 | 0.03 |

- base model: `runwayml/stable-diffusion-v1-5` (sd1, float32)
- base fingerprint: `{m["base"]["fingerprint"]}`
- patch id: `{m["patch_id"]}`
- made by: {m["tool"]}, 2026-01-01T00:00:00+00:00

```
patchkit registry pull ORG/NAME && patchkit verify no-circle.safetensors --trust-store
patchkit apply BASE no-circle.safetensors -o PATCHED
```
"""
    assert hub.model_card(entry) == expected


def test_push_plans_one_commit_with_patch_signature_and_card(scored_entry, tmp_path):
    from patchkit.services import signing

    patch, entry = scored_entry
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    blob = tmp_path / "registry" / "blobs" / "sha256" / entry.blob
    signing.sign(blob, pair.private)  # as if it had been added signed
    api = RecordingApi()
    result = hub.push("no-circle@1.0.0", "my-team/no-circle", api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][1] == ("my-team/no-circle", {"private": False, "exist_ok": True})
    repo, operations, kwargs = api.calls[1][1]
    assert repo == "my-team/no-circle" and kwargs == {"commit_message": "patchkit: no-circle@1.0.0"}
    assert [op.path_in_repo for op in operations] == ["no-circle.safetensors", "no-circle.safetensors.sig", "README.md"]
    assert Path(operations[0].path_or_fileobj).read_bytes() == patch.read_bytes()
    assert operations[2].path_or_fileobj == hub.model_card(entry).encode()
    assert result.files == ["no-circle.safetensors", "no-circle.safetensors.sig", "README.md"]


def test_pull_reads_through_the_hub_cache(scored_entry, tmp_path):
    patch, _ = scored_entry
    registry.remove("no-circle@1.0.0")
    cache = Path(os.environ["HF_HUB_CACHE"]) / "models--my-team--no-circle"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(patch, snapshot / "no-circle.safetensors")
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(commit)
    hub_cache = Path(os.environ["HF_HUB_CACHE"])  # huggingface_hub read its default at import; be explicit
    result = hub.pull("my-team/no-circle", cache_dir=hub_cache)
    assert result.added and result.entry.ref == "no-circle@1.0.0"
    assert hub.pull(f"my-team/no-circle@{commit}", cache_dir=hub_cache).added is False
    with pytest.raises(NotCachedError, match="not in the Hugging Face cache"):
        hub.pull("my-team/absent", cache_dir=hub_cache)


def test_push_offline_is_one_clear_error(scored_entry):
    """With HF_HUB_OFFLINE=1 (set in every test) the real HfApi refuses; patchkit says so in one line."""
    from patchkit.errors import OutputError

    with pytest.raises(OutputError, match="HF_HUB_OFFLINE is set"):
        hub.push("no-circle@1.0.0", "my-team/no-circle")
