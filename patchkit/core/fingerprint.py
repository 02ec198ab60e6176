"""The base fingerprint: one SHA-256 that names a model's weights, whatever file holds them.

Definition (version 1), also in docs/fingerprint.md:

    sha256( b"patchkit-fingerprint/1\\n"
            + for component in ("unet", "text_encoder", "text_encoder_2") that the model has,
                for key in sorted(diffusers state-dict keys of that component, text-encoder keys
                                  in the classic "text_model.*" form, see canonical_key),
                  skipping keys that end in "position_ids" (index buffers, not weights):
                    utf8(f"{component}/{key}\\t{dtype}\\t{shape}\\t{nbytes}\\n") + raw little-endian bytes )

Keys are diffusers names, so a single-file checkpoint (converted on read) and a diffusers
folder holding the same tensors give the same fingerprint. The VAE and the tokenizer are
not hashed: patches never touch them, and users swap VAEs freely.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

FINGERPRINT_VERSION = 1
HASHED_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_MAGIC = b"patchkit-fingerprint/1\n"
_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def canonical_key(component: str, key: str) -> str:
    """Text-encoder keys in the classic `text_model.*` form, whatever transformers version saved them.

    transformers >= 5.6 saves CLIPTextModel without the `text_model.` prefix; every SD
    checkpoint before it has the prefix. The fingerprint must not depend on which one wrote the file.
    """
    if component.startswith("text_encoder") and not key.startswith(("text_model.", "text_projection.")):
        return "text_model." + key
    return key


def is_hashed_key(key: str) -> bool:
    return not key.endswith("position_ids")


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype))


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def fingerprint(components: Mapping[str, Mapping[str, torch.Tensor]]) -> str:
    """Hash `components` (name -> key -> tensor) as defined above.

    The inner mappings may be lazy: each tensor is fetched, hashed and dropped in turn,
    so peak memory is one tensor, not one model.
    """
    digest = hashlib.sha256(_MAGIC)
    for component in HASHED_COMPONENTS:
        if component not in components:
            continue
        tensors = components[component]
        names = {canonical_key(component, k): k for k in tensors if is_hashed_key(k)}
        for name in sorted(names):
            tensor = tensors[names[name]]
            data = tensor_bytes(tensor)
            line = f"{component}/{name}\t{dtype_name(tensor.dtype)}\t{list(tensor.shape)}\t{len(data)}\n"
            digest.update(line.encode())
            digest.update(data)
    return digest.hexdigest()
