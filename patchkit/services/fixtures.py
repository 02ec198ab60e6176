"""Random-weight Stable Diffusion models shaped like SD 1.5, SD 2.1 and SDXL, built offline.

The configs in patchkit/architectures are the published ones, written down as facts.
`tiny=True` keeps every block type, conditioning path and text encoder of the family
but shrinks widths and depths, the way diffusers' own dummy-component tests do.
`synthetic_patch` writes a random patch with a valid manifest for any such base: what
benches and tests use where they need many real patch files without training each.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchkit.core.ldm_layout import to_single_file_state
from patchkit.core.manifest import new_manifest
from patchkit.core.patch_id import patch_id_of
from patchkit.errors import UsageError
from patchkit.io.atomic import atomic_path, check_output_path
from patchkit.io.tensors_out import save_tensors
from patchkit.models import refs, weights
from patchkit.models.refs import ARCHITECTURES
from patchkit.services.patches import base_record, created_at, write_patch
from patchkit.testbed.tokenizer import write_tokenizer_files
from patchkit.testbed.world import vocabulary_words

FAMILIES = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
Say = Callable[[str], None]


@dataclass(frozen=True)
class FixtureResult:
    folder: Path
    single_file: Path | None
    family: str
    parameters: int
    dtype: str


def published_configs(name: str) -> dict[str, dict[str, Any]]:
    if name not in FAMILIES:
        raise UsageError(f"unknown architecture {name!r}", hint=f"choose one of: {', '.join(FAMILIES)}")
    root = ARCHITECTURES / name
    configs = {
        d.name: json.loads((d / "config.json").read_text()) for d in root.iterdir() if (d / "config.json").is_file()
    }
    configs["scheduler"] = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    configs["model_index"] = json.loads((root / "model_index.json").read_text())
    return configs


def shrink(name: str, configs: dict[str, dict[str, Any]], vocab_size: int) -> dict[str, dict[str, Any]]:
    """Same blocks and conditioning as `name`, at test-sized widths."""
    out = copy.deepcopy(configs)
    unet = out["unet"]
    blocks = len(unet["block_out_channels"])
    unet["block_out_channels"] = [32 * min(2, i + 1) for i in range(blocks)]
    unet["sample_size"] = 8
    unet["layers_per_block"] = 1
    if isinstance(unet["attention_head_dim"], list):
        unet["attention_head_dim"] = [2] * blocks
    else:
        unet["attention_head_dim"] = 2
    if "transformer_layers_per_block" in unet:
        unet["transformer_layers_per_block"] = [min(2, n) for n in unet["transformer_layers_per_block"]]
    for te in ("text_encoder", "text_encoder_2"):
        if te in out:
            out[te].update(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                vocab_size=vocab_size,
                projection_dim=32,
            )
    if name == "sdxl":
        # diffusers tells SDXL's two encoders apart by width, so they must differ, as 768/1280 do
        out["text_encoder_2"].update(hidden_size=48, projection_dim=48)
        unet["cross_attention_dim"] = 32 + 48  # both encoders' hidden states, concatenated
        unet["addition_time_embed_dim"] = 8
        unet["projection_class_embeddings_input_dim"] = 6 * 8 + 48
    else:
        unet["cross_attention_dim"] = 32
    vae = out["vae"]
    vae.update(
        block_out_channels=[32, 64],
        down_block_types=vae["down_block_types"][:2],
        up_block_types=vae["up_block_types"][:2],
    )
    vae.update(layers_per_block=1, sample_size=32)
    return out


def build_random_model(
    name: str,
    out: Path,
    *,
    tiny: bool = False,
    dtype: str = "fp32",
    single_file: Path | None = None,
    seed: int = 0,
    force: bool = False,
    progress: Say | None = None,
) -> FixtureResult:
    """Write a diffusers folder at `out` (and optionally a single file) with random weights."""
    from patchkit.backend.components import build_component, save_component

    say = progress or (lambda _msg: None)
    configs = published_configs(name)
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
    check_output_path(out, force=force)
    if single_file is not None:
        check_output_path(single_file, force=force)
    tokenizer_dir = out.parent / f".{out.name}.tokenizer"
    write_tokenizer_files(vocabulary_words(), tokenizer_dir, 77)
    vocab_size = len(json.loads((tokenizer_dir / "vocab.json").read_text()))
    if tiny:
        configs = shrink(name, configs, vocab_size)
    torch.manual_seed(seed)
    states: dict[str, dict[str, torch.Tensor]] = {}
    parameters = 0
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if component not in configs:
                continue
            say(f"building {component}")
            module = build_component(component, configs[component]).to(DTYPES[dtype])
            parameters += sum(p.numel() for p in module.parameters())
            save_component(module, tmp / component)
            states[component] = {k: v for k, v in module.state_dict().items()}
            del module
        for tok in ("tokenizer", "tokenizer_2"):
            if tok in configs["model_index"]:
                shutil.copytree(tokenizer_dir, tmp / tok)
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2))
        (tmp / "model_index.json").write_text(json.dumps(configs["model_index"], indent=2))
    shutil.rmtree(tokenizer_dir)
    if single_file is not None:
        say("writing single-file checkpoint")
        family = FAMILIES[name]
        state = to_single_file_state(family, states, configs["unet"], configs["vae"])
        save_tensors(single_file, state, metadata={"patchkit.fixture": name})
    return FixtureResult(out, single_file, FAMILIES[name], parameters, dtype)


CROSS_ATTENTION = re.compile(r".*\.attn2\.to_[kv]\.weight")


def synthetic_patch(
    base: str, output: Path, *, concept: str, category: str = "object", seed: int = 0, rank: int = 4,
    magnitude: float = 0.01, info: weights.ModelInfo | None = None, force: bool = False,
) -> Path:  # fmt: skip
    """A random rank-`rank` cross-attention patch for `base`, with a valid manifest (method "import").

    For benches and tests that need many real patch files without training each one.
    """
    check_output_path(output, force=force)
    ref = refs.resolve(base, bundled_config=True)
    info = info or weights.describe(ref)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, span in sorted(weights.model_spans(ref)["unet"].items()):
        if CROSS_ATTENTION.fullmatch(key):
            module = key.removesuffix(".weight")
            out_features, in_features = span.shape
            tensors[f"unet.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * magnitude
            tensors[f"unet.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * magnitude
    manifest = new_manifest(
        patch_id=patch_id_of(tensors),
        name=f"synthetic-{concept.replace(' ', '-')}",
        version="0.0.1",
        base=base_record(info, base),
        concepts=[{"name": concept, "category": category, "action": "forget", "token": concept}],
        method={"name": "import", "seed": seed, "settings": {"source": "random", "magnitude": magnitude}},
        layout={"keys": "peft", "rank": rank, "modules": ["attn2.to_k", "attn2.to_v"]},
        created_at=created_at(),
    )
    write_patch(output, tensors, manifest, family=info.family, rank=rank, resolution=info.resolution, base_name=base)
    return output
