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
