"""The manifest: schema validation on every read, explicit migrations, newer versions refused."""

from __future__ import annotations

import json

import pytest

from patchkit.core.manifest import SCHEMA_VERSION, ManifestError, migrate, parse_manifest

ID = "sha256:" + "ab" * 32
FINGERPRINT = "cd" * 32


def manifest(**changes: object) -> dict:
    base = {
        "schema_version": SCHEMA_VERSION,
        "patch_id": ID,
        "name": "forget-circle",
        "version": "1.0.0",
        "base": {
            "family": "sd1",
            "reference": "testbed",
            "revision": None,
            "fingerprint": FINGERPRINT,
            "dtype": "float32",
        },
        "concepts": [{"name": "circle", "category": "object", "action": "forget", "token": "circle"}],
        "method": {"name": "fmn", "seed": 0, "settings": {"steps": 40}},
        "created_at": "2026-11-28T00:00:00+00:00",
        "tool": "patchkit 0.1.0",
    }
    base.update(changes)
    return base


def test_a_valid_manifest_round_trips():
    text = json.dumps(manifest())
    assert parse_manifest(text, "p") == manifest()


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"patch_id": "md5:00"}, r"\$\.patch_id"),
        ({"concepts": []}, r"\$\.concepts"),
        ({"concepts": [{"name": "a", "category": "texture", "action": "forget", "token": "a"}]}, r"\$\.concepts\[0\]"),
        ({"concepts": [{"name": "a", "category": "id", "action": "correct", "token": "a"}]}, r"\$\.concepts\[0\]"),
        ({"name": "../escape"}, r"\$\.name"),
        ({"surprise": 1}, r"\$: Additional properties"),
        ({"created_at": "yesterday"}, r"\$\.created_at"),
    ],
)
def test_schema_errors_name_the_json_path(changes, path):
    with pytest.raises(ManifestError, match=path):
        parse_manifest(json.dumps(manifest(**changes)), "p")


def test_newer_versions_are_refused_with_an_upgrade_hint():
    with pytest.raises(ManifestError, match="newer than this patchkit") as info:
        parse_manifest(json.dumps(manifest(schema_version=SCHEMA_VERSION + 1)), "p")
    assert "upgrade" in (info.value.hint or "")


@pytest.mark.parametrize("text", [None, "{not json", "[1, 2]", '{"schema_version": "1"}'])
def test_missing_or_malformed_manifests(text):
    with pytest.raises(ManifestError):
        parse_manifest(text, "p")


def test_version_0_migrates_to_the_current_schema():
    v0 = {
        "schema_version": 0,
        "action": "forget",
        "concepts": [{"name": "john doe", "category": "id", "action": "forget"}],
        "base": {"family": "sd1", "reference": "testbed", "fingerprint": FINGERPRINT, "dtype": "float32"},
        "method": {"name": "fmn", "steps": 100, "seed": 0, "training_seconds": 1.5, "rank": 4},
        "created_at": "2026-11-01T00:00:00+00:00",
        "tool": "patchkit 0.1.0",
    }
    current = parse_manifest(json.dumps(v0), "old.safetensors", patch_id=ID)
    assert current["schema_version"] == SCHEMA_VERSION
    assert current["patch_id"] == ID and current["name"] == "forget-john-doe"
    assert current["concepts"][0]["token"] == "john doe"
    assert current["method"]["settings"] == {"steps": 100, "rank": 4}
    assert migrate(dict(v0), "x")["schema_version"] == SCHEMA_VERSION


def test_adapter_metadata_states_each_modules_rank_with_alpha_equal_to_it():
    import json

    from patchkit.core.patch_metadata import lora_adapter_metadata

    shapes = {"unet.a.to_k.lora_A.weight": (4, 8), "unet.a.to_k.lora_B.weight": (8, 4),
              "unet.b.to_v.lora_A.weight": (4, 8), "unet.c.to_v.lora_A.weight": (8, 8)}  # fmt: skip
    stated = json.loads(lora_adapter_metadata(shapes) or "{}")
    assert stated["unet.r"] == stated["unet.lora_alpha"] == 4  # the most common rank
    assert stated["unet.target_modules"] == ["a.to_k", "b.to_v", "c.to_v"]
    assert stated["unet.rank_pattern"] == stated["unet.alpha_pattern"] == {"c.to_v": 8}  # a merged module
    assert lora_adapter_metadata({"lora_unet_a.lora_down.weight": (4, 8)}) is None  # kohya: not diffusers' key


def test_a_base_is_named_by_its_hub_id_only_when_it_came_from_the_hub():
    from patchkit.core.patch_metadata import patch_header

    def name(reference, revision):
        manifest = {"name": "p", "base": {"reference": reference, "revision": revision}}
        header = patch_header(manifest, family="sd1", title="p", rank=4, resolution=512, created="2026-01-01",
                              data_hash="0x0", base_name=reference, shapes={})  # fmt: skip
        return header["ss_sd_model_name"]

    assert name("fx/sd21-tiny", None) == "sd21-tiny"  # a local folder that looks like org/name
    assert name("runwayml/stable-diffusion-v1-5", "a" * 40) == "runwayml/stable-diffusion-v1-5"
    assert name("/home/me/models/sd15.safetensors", None) == "sd15.safetensors"


def test_every_family_and_prediction_gets_modelspec_and_sd_scripts_labels():
    """ModelSpec 1.0.1 architecture ids and sd-scripts' ss_base_model_version, per base kind;
    the SD 2 epsilon (512) base is the one the full-size tests do not build."""
    from patchkit.core.patch_metadata import family_labels

    assert family_labels("sd1", "epsilon") == ("stable-diffusion-v1/lora", "sd_v1")
    assert family_labels("sd2", "epsilon") == ("stable-diffusion-v2-512/lora", "sd_v2")
    assert family_labels("sd2", "v_prediction") == ("stable-diffusion-v2-768-v/lora", "sd_v2_v")
    assert family_labels("sdxl", "epsilon") == ("stable-diffusion-xl-v1-base/lora", "sdxl_base_v1-0")
    assert family_labels("sdxl", "v_prediction")[0] == "stable-diffusion-xl-v1-base/lora"  # no v id: the family
