"""The test oracle for patchkit's own single-file layout: byte spans traced through diffusers' converters.

diffusers' converters run on meta tensors (no bytes read), and each output tensor is traced
back to the checkpoint key it came from; patchkit's inverse LDM layout must agree span for span.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from patchkit.backend.single_file import to_diffusers_components
from patchkit.core.fingerprint import HASHED_COMPONENTS, canonical_key, is_hashed_key
from patchkit.core.ldm_layout import OPENCLIP_COMPONENTS, TEXT_ENCODER_PREFIXES
from patchkit.io.safetensors_io import Header
from patchkit.io.tensor_spans import ModelSpans, TensorSpan, header_spans, torch_dtype

_OPENCLIP_QKV = re.compile(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")


def _traced(converted: Mapping[str, torch.Tensor], origin: dict[int, str]) -> tuple[dict[str, str], list[str]]:
    """Which checkpoint key each converted tensor is, by identity; and the keys the converter copied."""
    found, copied = {}, []
    for key, tensor in converted.items():
        if id(tensor) in origin:
            found[key] = origin[id(tensor)]
        else:
            copied.append(key)
    return found, copied


def _openclip_span(key: str, prefix: str, spans: Mapping[str, TensorSpan], hidden: int) -> TensorSpan:
    """diffusers' converter copies OpenCLIP's fused in_proj rows and transposed projection; map those by hand."""
    if key == "text_projection.weight":
        stored = spans[prefix + "text_projection"]
        return replace(stored, shape=stored.shape[::-1], transposed=True)
    match = _OPENCLIP_QKV.fullmatch(key)
    if match is None:
        raise KeyError(f"diffusers converted {key!r} by value; patchkit cannot map it to a byte range")
    fused = spans[f"{prefix}transformer.resblocks.{match[1]}.attn.in_proj_{match[3]}"]
    part = "qkv".index(match[2])
    size = fused.nbytes // 3
    shape = (hidden, *fused.shape[1:])
    return replace(fused, shape=shape, start=fused.start + part * size, nbytes=size)


def single_file_spans(path: Path, header: Header, configs: Mapping[str, dict[str, Any]], family: str) -> ModelSpans:
    """Byte spans, under diffusers names, of a single-file checkpoint's UNet and text encoders.

    diffusers' own converters decide the mapping: they run on meta tensors (no bytes read),
    and each output tensor is traced back to the checkpoint key it came from.
    """
    spans = header_spans(path, header)
    metas = {k: torch.empty(s.shape, dtype=torch_dtype(s.dtype), device="meta") for k, s in spans.items()}
    origin = {id(t): k for k, t in metas.items()}
    converted = to_diffusers_components(metas, configs, family)
    out: ModelSpans = {}
    for component, tensors in converted.items():
        if component not in HASHED_COMPONENTS:
            continue
        found, copied = _traced(tensors, origin)
        mapped = {canonical_key(component, k): spans[v] for k, v in found.items() if is_hashed_key(k)}
        if copied:
            prefix = TEXT_ENCODER_PREFIXES.get((family, component), "")
            if (family, component) not in OPENCLIP_COMPONENTS:
                raise KeyError(f"diffusers converted {copied[0]!r} of {component} by value; cannot map it")
            hidden = int(configs[component]["hidden_size"])
            for key in copied:
                if is_hashed_key(key):
                    mapped[canonical_key(component, key)] = _openclip_span(key, prefix, spans, hidden)
        out[component] = mapped
    return out
