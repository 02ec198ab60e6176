import shutil
from pathlib import Path

import pytest
import torch

from patchkit.backend import pipeline
from patchkit.errors import (
    CorruptFileError,
    InputError,
    ModelMismatchError,
    NotAPipelineError,
    NotCachedError,
    PickleRefusedError,
    UsageError,
)
from patchkit.models import refs, weights

FAMILY = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_family_and_fingerprint_agree_across_layouts(tiny_models, name):
    folder, single = tiny_models[name]
    as_folder = weights.describe(refs.resolve(str(folder)))
    as_file = weights.describe(refs.resolve(str(single), config=folder))
    assert as_folder.family == as_file.family == FAMILY[name]
    assert as_folder.fingerprint == as_file.fingerprint
    assert as_file.layout == "single_file" and as_folder.layout == "folder"


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_single_file_loads_the_same_weights_in_diffusers(tiny_models, name):
    folder, single = tiny_models[name]
    from_folder = pipeline.load_pipeline(refs.resolve(str(folder)))
    from_file = pipeline.load_pipeline(refs.resolve(str(single), config=folder))
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours = getattr(from_folder, component, None)
        if ours is None:
            continue
        theirs = getattr(from_file, component).state_dict()
        for key, tensor in ours.state_dict().items():
            assert not theirs[key].is_meta, f"{component}.{key} was not loaded from the single file"
            assert torch.equal(tensor, theirs[key]), f"{component}.{key} differs"


def test_fingerprint_differs_between_models(tiny_models):
    prints = {weights.describe(refs.resolve(str(f))).fingerprint for f, _ in tiny_models.values()}
    assert len(prints) == 3


def test_missing_path():
    with pytest.raises(InputError, match="no such file or folder"):
        refs.resolve("./does/not/exist")


def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(NotAPipelineError, match=r"model_index\.json"):
        refs.resolve(str(tmp_path))


def test_single_file_needs_config(tiny_models):
    _, single = tiny_models["sd15"]
    with pytest.raises(UsageError, match="--config"):
        refs.resolve(str(single))


def test_truncated_single_file(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(single.read_bytes()[: single.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="truncated"):
        refs.resolve(str(cut), config=folder)


def test_wrong_config_family(tiny_models):
    _, sd15_file = tiny_models["sd15"]
    sdxl_folder, _ = tiny_models["sdxl"]
    with pytest.raises(ModelMismatchError, match="sd1 checkpoint"):
        weights.describe(refs.resolve(str(sd15_file), config=sdxl_folder))


def test_pickle_refused_then_read_safely(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    from safetensors.torch import load_file

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(single))}, ckpt)
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        refs.resolve(str(ckpt), config=folder)
    ref = refs.resolve(str(ckpt), config=folder, allow_pickle=True)
    assert weights.describe(ref).fingerprint == weights.describe(refs.resolve(str(folder))).fingerprint


def test_pickle_with_code_is_not_executed(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Exploit()}}, evil, _use_new_zipfile_serialization=True)
    with pytest.raises(InputError, match="could not be loaded safely"):
        refs.resolve(str(evil), config=folder, allow_pickle=True)
    assert not marker.exists()


def test_hub_id_not_cached_offline():
    with pytest.raises(NotCachedError, match="someorg/some-model"):
        refs.resolve("someorg/some-model")


def test_hub_id_resolves_from_the_cache(tiny_models, tmp_path, monkeypatch):
    folder, _ = tiny_models["sd15"]
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--tiny-sd"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    ref = refs.resolve("acme/tiny-sd")
    assert ref.source == "hub"
    assert weights.describe(ref).fingerprint == weights.describe(refs.resolve(str(folder))).fingerprint


def test_testbed_is_the_embedded_default():
    info = weights.describe(refs.resolve("testbed"))
    assert info.source == "testbed"
    assert info.family == "sd1"
    assert info.dtype == "float32"
