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
    manifest["base"] = dict(manifest["base"], reference="runwayml/stable-diffusion-v1-5", revision="0" * 40)
    score = {"bench": "testbed", "definition": "mscore/1", "prompt": {"before": 0.97, "after": 0.03}}
    manifest["concepts"] = [dict(manifest["concepts"][0], mscore=score)]
    write_patch(patch, load_file(str(patch)), manifest, family="sd1", rank=4, resolution=64, base_name="x")
    return patch, registry.add(patch).entry


def card_of(entry, repo="my-team/no-circle"):
    from huggingface_hub import ModelCard

    card = ModelCard(hub.model_card(entry, repo))  # huggingface_hub parses it back, YAML and all
    return card.data.to_dict(), card.text


def test_model_card_passes_the_hubs_rules_and_its_commands_name_real_things(scored_entry):
    from patchkit.core.hub_card import card_problems

    _, entry = scored_entry
    data, text = card_of(entry)
    assert card_problems(data) == []
    assert data["base_model"] == "runwayml/stable-diffusion-v1-5" and data["base_model_relation"] == "adapter"
    assert data["license"] == "mit" and data["pipeline_tag"] == "text-to-image" and data["library_name"] == "diffusers"
    assert {"lora", "stable-diffusion", "text-to-image", "object"} <= set(data["tags"])
    assert "| circle | object | forget | 0.97 | 0.03 |" in text
    base = "runwayml/stable-diffusion-v1-5"  # the card's text, not a download: nothing here reaches the Hub
    assert f'AutoPipelineForText2Image.from_pretrained("{base}")' in text
    assert 'pipe.load_lora_weights("my-team/no-circle", weight_name="no-circle.safetensors")' in text
    # pull stores into the registry, so the card applies the registry entry (no file that pull never wrote)
    assert (
        "patchkit registry pull my-team/no-circle" in text
        and "patchkit apply runwayml/stable-diffusion-v1-5 no-circle@1.0.0" in text
    )
    assert "ORG/NAME" not in text and entry.record["manifest"]["patch_id"] in text


def test_a_local_base_is_no_base_model_and_licences_become_hub_ids(scored_entry, tmp_path):
    from patchkit.core.hub_card import card_problems

    _, entry = scored_entry
    for reference, licence, want in (("fx/sd21-tiny", "Apache-2.0", {"license": "apache-2.0"}),
                                     ("testbed", "CreativeML-OpenRAIL-M", {"license": "creativeml-openrail-m"}),
                                     ("/models/sd15.safetensors", "Our Own Terms v2",
                                      {"license": "other", "license_name": "our-own-terms-v2"})):  # fmt: skip
        manifest = dict(entry.record["manifest"], license=licence)
        manifest["base"] = dict(manifest["base"], reference=reference, revision=None)  # not resolved from the Hub
        record = dict(entry.record, manifest=manifest)
        data, text = card_of(type(entry)(entry.name, entry.version, entry.blob, record))
        assert card_problems(data) == [], reference
        assert "base_model" not in data and "base_model_relation" not in data
        assert {k: data[k] for k in want} == want
        assert "not a Hub model" in text and "/models/" not in text  # a local path is never published
        assert f'from_pretrained("path/to/{reference.rsplit("/", 1)[-1]}")' in text


def test_card_rules_catch_what_the_hub_refuses():
    from patchkit.core.hub_card import card_problems

    assert card_problems({"license": "Apache-2.0"}) == ["license 'Apache-2.0' is not a Hub licence id"]
    assert card_problems({"base_model": "./fx/sd21-tiny"}) == ["base_model './fx/sd21-tiny' is not a Hub repo id"]
    assert card_problems({"base_model_relation": "adapter"}) == ["base_model_relation without a base_model"]
    assert card_problems({"license": "other"}) == ["license 'other' needs a license_name"]


def test_push_carries_both_layouts_and_the_card_says_who_reads_each(tiny_models, tmp_path, monkeypatch):
    from patchkit.services.export import export as export_layout

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    patch = synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "p.safetensors", concept="circle")
    twin = export_layout(patch, "kohya", tmp_path / "p.kohya.safetensors").output
    entry = registry.add(patch).entry
    api = RecordingApi()
    result = hub.push(entry.ref, "my-team/no-circle", api=api)
    name = entry.name
    assert result.files == [f"{name}.kohya.safetensors", f"{name}.safetensors", "README.md"]
    operations = api.calls[1][1][1]
    assert Path(operations[0].path_or_fileobj).read_bytes() == twin.read_bytes()
    text = operations[2].path_or_fileobj.decode()
    assert f"| `{name}.kohya.safetensors` | kohya | A1111, ComfyUI" in text and f"<lora:{name}.kohya:1>" in text
    # and pull takes both back into one entry
    registry.remove(entry.ref)
    cache = Path(os.environ["HF_HUB_CACHE"]) / "models--my-team--no-circle"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    snapshot = cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for op in operations[:2]:
        shutil.copy(op.path_or_fileobj, snapshot / op.path_in_repo)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(commit)
    pulled = hub.pull("my-team/no-circle", cache_dir=Path(os.environ["HF_HUB_CACHE"]))
    assert sorted(registry.layouts_of(pulled.entry)) == ["kohya", "peft"]


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
    assert operations[2].path_or_fileobj == hub.model_card(entry, "my-team/no-circle").encode()
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


def test_push_to_an_unreachable_hub_is_one_clear_error(scored_entry, tmp_path):
    """A connection refused (the Hub endpoint on a closed local port) is a network error, said in one line."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_x",
           "PATCHKIT_REGISTRY": str(tmp_path / "registry")}  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "patchkit", "registry", "push", "no-circle@1.0.0", "--repo",
                          "my-team/no-circle"], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 4 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("error: cannot push no-circle@1.0.0") and lines[1].startswith("hint: ")
