"""Textual inversion: learn one new token's embedding from images, with a frozen model.

Used by the capacity score (if the model under test can still be taught a token that
reproduces a concept, the concept is still in the weights, whatever its name does) and by
`forget --ti`, which forgets through the learnt token as well as through the name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image

from patchkit.backend import conditioning
from patchkit.core.pixels import to_tensor


@dataclass(frozen=True)
class InversionBudget:
    """The fixed, documented budget of mscore/1's capacity probe (docs/mscore.md)."""

    steps: int = 150
    learning_rate: float = 5e-3
    batch_size: int = 4
    placeholder: str = "<concept>"
    # a token the tokenizer already knows whose rows the placeholder starts from (an earlier
    # round's token, so an adversary goes on from where it stopped); else the mean of the table
    start_from: str | None = None


class _Tower(NamedTuple):
    """A (tokenizer, text encoder) pair by pipeline attribute, and its key in an SDXL embedding file."""

    tokenizer: str
    encoder: str
    key: str


# SD 1.x/2.x have the first, SDXL both; the placeholder is learnt in each
_TOWERS = (_Tower("tokenizer", "text_encoder", "clip_l"), _Tower("tokenizer_2", "text_encoder_2", "clip_g"))


def _towers(pipe: Any) -> list[_Tower]:
    return [tower for tower in _TOWERS if getattr(pipe, tower.encoder, None) is not None]


def _known_token(tokenizer: Any, token: str) -> int:
    """The id of a token added earlier (one piece, never split): refused if the tokenizer does not hold it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no token {token!r} to start the inversion from")
    return token_id


def invert_token(
    pipe: Any,
    images: Sequence[Image.Image],
    template: str,
    *,
    budget: InversionBudget,
    seed: int,
    on_step: Callable[[int], None] | None = None,
) -> Any:
    """A copy of `pipe` whose tokenizers know `budget.placeholder`, learnt from `images`.

    Only the new token's embedding rows train (one per text encoder: SDXL has two); the
    pipeline passed in is not changed. `template` holds "{}" where the placeholder goes,
    e.g. "a photo of {}".
    """
    generator = torch.Generator().manual_seed(seed)
    replaced: dict[str, Any] = {}
    rows: list[tuple[torch.Tensor, int, torch.Tensor]] = []  # (embedding matrix, new row, frozen copy)
    for tower in _towers(pipe):
        tokenizer = copy.deepcopy(getattr(pipe, tower.tokenizer))
        text_encoder = copy.deepcopy(getattr(pipe, tower.encoder))
        start_id = _known_token(tokenizer, budget.start_from) if budget.start_from is not None else None
        tokenizer.add_tokens([budget.placeholder])
        token_id = tokenizer.convert_tokens_to_ids(budget.placeholder)
        text_encoder.resize_token_embeddings(len(tokenizer))
        text_encoder.requires_grad_(False)
        embeddings = text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            embeddings[token_id] = embeddings[:-1].mean(0) if start_id is None else embeddings[start_id]
        embeddings.requires_grad_(True)
        rows.append((embeddings, token_id, embeddings.detach().clone()))
        replaced |= {tower.tokenizer: tokenizer, tower.encoder: text_encoder}
    extra = {"requires_safety_checker": False} if "safety_checker" in pipe.components else {}
    inverted = type(pipe)(**{**pipe.components, **replaced}, **extra)
    inverted.set_progress_bar_config(disable=True)
    optimizer = torch.optim.AdamW([r[0] for r in rows], lr=budget.learning_rate, weight_decay=0.0)

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        latents = pipe.vae.encode(to_tensor(images, size)).latent_dist.mean * pipe.vae.config.scaling_factor
    prompts = [template.format(budget.placeholder)] * budget.batch_size
    scheduler = pipe.scheduler
    prediction = scheduler.config.get("prediction_type", "epsilon")
    pipe.unet.requires_grad_(False)
    for step in range(budget.steps):
        pick = torch.randint(0, latents.shape[0], (budget.batch_size,), generator=generator)
        clean = latents[pick]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (budget.batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        cond = conditioning.encode(inverted, prompts, trainable=True)
        predicted = conditioning.predict(pipe.unet, noisy, timesteps, cond)
        target = scheduler.get_velocity(clean, noise, timesteps) if prediction == "v_prediction" else noise
        loss = F.mse_loss(predicted, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # every row but the new token's stays as it was
            for embeddings, token_id, frozen in rows:
                keep = torch.ones(embeddings.shape[0], dtype=torch.bool)
                keep[token_id] = False
                embeddings[keep] = frozen[keep]
        if on_step:
            on_step(step + 1)
    for embeddings, _, _ in rows:
        embeddings.requires_grad_(False)
    return inverted


def learnt_embeddings(pipe: Any, placeholders: Sequence[str]) -> dict[str, torch.Tensor]:
    """The rows `invert_token` learnt, as a file diffusers' `load_textual_inversion` reads.

    SD 1.x/2.x: {placeholder: rows}. SDXL, one placeholder: {"clip_l": ..., "clip_g": ...},
    the format SDXL embeddings are shared in (loaded once per text encoder); several:
    {"<placeholder>.clip_l": ..., "<placeholder>.clip_g": ...}. Every value is [n_vectors, dim]
    (here [1, dim]): A1111 and ComfyUI read shape[0] as the vector count, and diffusers takes
    a one-row tensor as one token.
    """
    towers = _towers(pipe)

    def row(tower: _Tower, placeholder: str) -> torch.Tensor:
        token_id = getattr(pipe, tower.tokenizer).convert_tokens_to_ids(placeholder)
        weight = getattr(pipe, tower.encoder).get_input_embeddings().weight
        rows: torch.Tensor = weight[token_id : token_id + 1].detach().clone()
        return rows

    if len(towers) == 1:
        return {p: row(towers[0], p) for p in placeholders}
    if len(placeholders) == 1:
        return {tower.key: row(tower, placeholders[0]) for tower in towers}
    return {f"{p}.{tower.key}": row(tower, p) for p in placeholders for tower in towers}
