"""Test helpers that build real artefacts: a hand-made forgetting patch in diffusers/PEFT LoRA format."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


@torch.no_grad()
def _hidden_states(pipe, prompts: list[str]) -> torch.Tensor:
    tokens = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    )
    return pipe.text_encoder(tokens.input_ids)[0]


@torch.no_grad()
def hand_made_forget_patch(pipe, concept_prompts, anchor_prompts, retain_prompts, out: Path, rank: int = 8) -> Path:
    """Edit every cross-attention to_k/to_v in closed form, the way UCE does, and save the edit as a LoRA.

    The concept prompts' text states are mapped onto the anchor prompts' states; the retain
    prompts' states are held where they were. The delta is factored to `rank` by SVD.
    """
    concept = _hidden_states(pipe, concept_prompts).flatten(0, 1)
    anchor = _hidden_states(pipe, anchor_prompts).flatten(0, 1)
    retain = _hidden_states(pipe, retain_prompts).flatten(0, 1)
    dim = concept.shape[1]
    tensors = {}
    for name, module in pipe.unet.named_modules():
        if not name.endswith(("attn2.to_k", "attn2.to_v")):
            continue
        weight = module.weight.double()
        lhs = weight @ (anchor.double().T @ concept.double() + 0.5 * retain.double().T @ retain.double())
        rhs = concept.double().T @ concept.double() + 0.5 * retain.double().T @ retain.double() + 1e-3 * torch.eye(dim)
        delta = lhs @ torch.linalg.inv(rhs) - weight
        u, s, vh = torch.linalg.svd(delta)
        root = s[:rank].sqrt()
        tensors[f"unet.{name}.lora_B.weight"] = (u[:, :rank] * root).float().contiguous()
        tensors[f"unet.{name}.lora_A.weight"] = (root[:, None] * vh[:rank]).float().contiguous()
    save_file(tensors, str(out), metadata={"format": "pt"})
    return out


def patch_deltas(tensors) -> dict[str, torch.Tensor]:
    """Each module's fused delta (B @ A, alpha applied) by weight key, as torch tensors."""
    from patchkit.core.fusion import lora_factors

    return {f.weight_key: torch.from_numpy(f.delta()) for f in lora_factors(tensors)}


def fingerprint(components) -> str:
    """The base fingerprint of in-memory (or lazily loaded) components: the definition in
    core/fingerprint.py computed the plain way, as an oracle for the span-and-cache path."""
    import hashlib

    from patchkit.core.fingerprint import (
        HASHED_COMPONENTS,
        Leaf,
        canonical_key,
        combine,
        dtype_name,
        is_hashed_key,
        tensor_bytes,
    )

    leaves = []
    for component in HASHED_COMPONENTS:
        tensors = components.get(component, {})
        for key in tensors:
            if is_hashed_key(key):
                data = tensor_bytes(tensors[key])
                digest = hashlib.sha256(data).hexdigest()
                name = canonical_key(component, key)
                leaves.append(
                    Leaf(component, name, dtype_name(tensors[key].dtype), tuple(tensors[key].shape), len(data), digest)
                )
    return combine(leaves)
