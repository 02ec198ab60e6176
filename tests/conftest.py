"""Shared fixtures. Every test runs offline, with home and cache paths inside tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("PATCHKIT_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("PATCHKIT_TRUST_STORE", str(tmp_path / "trust"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("PATCHKIT_CACHE_DIR", raising=False)
    monkeypatch.delenv("PATCHKIT_NO_CACHE", raising=False)
    monkeypatch.delenv("PATCHKIT_REQUIRE_SIGNED", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.delenv("PATCHKIT_DEBUG", raising=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """For each SD family: (diffusers folder, single-file checkpoint) of a tiny random model."""
    from patchkit.services.fixtures import build_random_model

    root = tmp_path_factory.mktemp("tiny-models")
    built = {}
    for name in ("sd15", "sd21", "sdxl"):
        result = build_random_model(name, root / name, tiny=True, single_file=root / f"{name}.safetensors")
        assert result.single_file is not None
        built[name] = (result.folder, result.single_file)
    return built
