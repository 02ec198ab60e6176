"""Read a diffusers pipeline folder's configs and weights without building any model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchkit.core.jsonread import parse_json
from patchkit.errors import InputError, NotAPipelineError, PickleRefusedError
from patchkit.io.regular import read_capped
from patchkit.io.safetensors_io import PICKLE_SUFFIXES, LazyTensors

WEIGHT_NAMES = ("diffusion_pytorch_model", "model")
if TYPE_CHECKING:
    import torch

MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


# diffusers' configs are a few kB (a sharded weight index, a few hundred); past this is not a config
MAX_CONFIG_BYTES = 16 << 20


def read_json(path: Path) -> dict[str, Any]:
    try:
        text = read_capped(path, MAX_CONFIG_BYTES, hint="restore the file")  # a FIFO here would block forever
    except InputError as exc:
        raise NotAPipelineError(exc.message, hint="restore the file") from exc
    except OSError as exc:
        raise NotAPipelineError(f"{path} is not readable ({exc.__class__.__name__})", hint="restore the file") from exc
    data: dict[str, Any] = parse_json(text, str(path), hint="restore the file", error=NotAPipelineError)
    return data


def check_pipeline_folder(folder: Path) -> dict[str, Any]:
    """Return model_index.json of `folder`, or explain why it is not an SD pipeline."""
    hint = (
        "point at a folder written by save_pretrained (model_index.json, unet/, text_encoder/, vae/), "
        "or at a single-file .safetensors checkpoint with --config"
    )
    index_path = folder / "model_index.json"
    if not index_path.exists():  # a FIFO or folder here is named by read_json, not called missing
        raise NotAPipelineError(f"{folder} is not a Stable Diffusion pipeline folder: no model_index.json", hint=hint)
    index = read_json(index_path)
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if component not in index or not (folder / component).is_dir():
            raise NotAPipelineError(f"{folder} is not a Stable Diffusion pipeline folder: no {component}/", hint=hint)
    for component in present_components(folder):  # a broken config must not be copied into a release
        component_config(folder, component)
    return index


def component_config(folder: Path, component: str) -> dict[str, Any]:
    return read_json(folder / component / "config.json")


def prediction_type(folder: Path) -> str:
    """What the UNet predicts (the scheduler's `prediction_type`): "epsilon", or "v_prediction" on SD 2.x-768."""
    path = folder / "scheduler" / "scheduler_config.json"
    found = read_json(path).get("prediction_type", "epsilon") if path.exists() else "epsilon"
    return found if found in PREDICTION_TYPES else "epsilon"


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def present_components(folder: Path) -> list[str]:
    return [c for c in MODEL_COMPONENTS if (folder / c / "config.json").exists()]


def weight_files(folder: Path, component: str) -> list[Path]:
    """The safetensors files holding `component`'s weights (several when sharded)."""
    directory = folder / component
    for stem in WEIGHT_NAMES:
        single = directory / f"{stem}.safetensors"
        if single.is_file():
            return [single]
        index = directory / f"{stem}.safetensors.index.json"
        if index.exists():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            return [directory / shard for shard in shards]
    pickles = [p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES] if directory.is_dir() else []
    if pickles:  # --allow-pickle converts single files only: a folder is re-saved instead
        raise PickleRefusedError(
            f"{directory} holds pickled weights ({pickles[0].name}), which can run code when loaded: refused",
            hint="re-save the pipeline with save_pretrained(..., safe_serialization=True)",
        )
    raise NotAPipelineError(
        f"{directory} holds no .safetensors weights", hint="re-save the pipeline with safe_serialization=True"
    )


class ComponentTensors(Mapping[str, "torch.Tensor"]):
    """All tensors of one component, across its shards, loaded lazily."""

    def __init__(self, folder: Path, component: str) -> None:
        self._shards = [LazyTensors(p) for p in weight_files(folder, component)]
        self._where = {key: shard for shard in self._shards for key in shard}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key][key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)
