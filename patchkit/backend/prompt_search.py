"""attack/1's discrete prompt search: real vocabulary words that make the model draw a concept.

UnlearnDiffAtk-style (arXiv 2310.11868): the objective is the model-under-test's own
denoising loss on the concept's reference images, conditioned on a prompt with `k` free
word slots; a prompt with a low loss is one the model denoises the concept's images
under, i.e. one that brings the concept back. Every candidate is a whole word of the
model's tokenizer, so what is found is a prompt anyone can type.

- a small vocabulary (the testbed's ~40 words): every word is tried in every slot, slot by
  slot, for a few sweeps (coordinate descent, exact);
- a large one (CLIP's 49k): GCG-style, the gradient of the loss through a one-hot of each
  slot ranks the words, and the best few swaps are then scored exactly.

The loss uses its own noise and timesteps (`SearchBudget.seed`); the prompts it finds are
judged afterwards on image seeds it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from patchkit.backend import conditioning
from patchkit.core.pixels import to_tensor

_ROWS_PER_CALL = 128  # UNet rows per forward: candidates x reference draws


@dataclass(frozen=True)
class SearchBudget:
    """The fixed, documented budget of attack/1's search (docs/attack.md)."""

    tokens: int = 2  # free word slots in the prompt
    sweeps: int = 2  # exhaustive: passes over the slots
    exhaustive_limit: int = 512  # vocabularies up to this size are searched exhaustively
    steps: int = 24  # gradient-guided: iterations
    top_k: int = 32  # gradient-guided: words kept per slot from the gradient
    trials: int = 48  # gradient-guided: swaps scored exactly per iteration
    draws: int = 2  # (timestep, noise) pairs per reference image
    keep: int = 2  # the best distinct prompts, judged afterwards
    seed: int = 1_000_003


@dataclass(frozen=True)
class Found:
    prompt: str
    words: tuple[str, ...]
    loss: float


def token_ids(pipe: Any, text: str) -> tuple[int, ...]:
    """How the model's first tokenizer reads `text` (no padding)."""
    ids: list[int] = pipe.tokenizer(text, truncation=True, max_length=pipe.tokenizer.model_max_length).input_ids
    return tuple(ids)


def vocabulary_strings(pipe: Any) -> list[str]:
    """Every token of the first tokenizer as text, end-of-word marks removed: whole words and pieces."""
    return sorted({t.removesuffix("</w>") for t in pipe.tokenizer.get_vocab()})


def candidate_words(pipe: Any, banned: Sequence[str]) -> list[tuple[int, str]]:
    """(token id, word) for every whole alphabetic word token, except the banned ones.

    A word the tokenizer cannot be made to read (CLIP lower-cases what it is given, so its
    "H</w>" is never typed: "H" reads as "h") is left out: every candidate is a prompt."""
    excluded = {b.lower() for b in banned}
    special = set(pipe.tokenizer.all_special_tokens)
    lower_cases = token_ids(pipe, "A") == token_ids(pipe, "a")
    out = []
    for token, index in pipe.tokenizer.get_vocab().items():
        if token in special or not token.endswith("</w>"):
            continue
        word = token.removesuffix("</w>")
        if lower_cases and word != word.lower():
            continue
        if word.isascii() and word.isalpha() and word.lower() not in excluded:
            out.append((index, word))
    return sorted(out)


class _Objective:
    """The denoising loss of prompts on fixed (reference latent, timestep, noise) draws."""

    def __init__(self, pipe: Any, images: Sequence[Image.Image], budget: SearchBudget) -> None:
        self.pipe = pipe
        generator = torch.Generator().manual_seed(budget.seed)
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        with torch.no_grad():
            latents = pipe.vae.encode(to_tensor(images, size)).latent_dist.mean * pipe.vae.config.scaling_factor
        clean = latents.repeat_interleave(budget.draws, dim=0)
        scheduler = pipe.scheduler
        noise = torch.randn(clean.shape, generator=generator)
        self.timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator)
        self.noisy = scheduler.add_noise(clean, noise, self.timesteps)
        prediction = scheduler.config.get("prediction_type", "epsilon")
        self.target = scheduler.get_velocity(clean, noise, self.timesteps) if prediction == "v_prediction" else noise
        self.rows = clean.shape[0]

    def loss_rows(self, cond: conditioning.Conditioning, count: int) -> torch.Tensor:
        """Mean loss for each of `count` prompts whose conditioning rows repeat `self.rows` times."""
        index = torch.arange(count).repeat_interleave(self.rows)
        noisy = self.noisy.repeat(count, 1, 1, 1)
        timesteps = self.timesteps.repeat(count)
        predicted = conditioning.predict(self.pipe.unet, noisy, timesteps, cond.rows(index))
        errors = F.mse_loss(predicted, self.target.repeat(count, 1, 1, 1), reduction="none")
        per_prompt: torch.Tensor = errors.flatten(1).mean(1).view(count, self.rows).mean(1)
        return per_prompt

    def losses(self, prompts: Sequence[str]) -> list[float]:
        out: list[float] = []
        chunk = max(1, _ROWS_PER_CALL // self.rows)
        with torch.no_grad():
            for start in range(0, len(prompts), chunk):
                part = list(prompts[start : start + chunk])
                cond = conditioning.encode(self.pipe, part)
                out.extend(self.loss_rows(cond, len(part)).tolist())
        return out


def _prompt(template: str, words: Sequence[str]) -> str:
    return template.format(" ".join(words))


def search_prompts(
    pipe: Any,
    images: Sequence[Image.Image],
    template: str,
    banned: Sequence[str],
    *,
    budget: SearchBudget,
    on_step: Callable[[int, int], None] | None = None,
) -> list[Found]:
    """The `budget.keep` lowest-loss distinct prompts `template.format(words)` found, best first."""
    candidates = candidate_words(pipe, banned)
    if not candidates:
        return []
    objective = _Objective(pipe, images, budget)
    seen: dict[tuple[str, ...], float] = {}

    def score(options: list[tuple[str, ...]]) -> list[float]:
        fresh = [o for o in dict.fromkeys(options) if o not in seen]
        for option, loss in zip(fresh, objective.losses([_prompt(template, o) for o in fresh]), strict=True):
            seen[option] = loss
        return [seen[o] for o in options]

    words = tuple(candidates[0][1] for _ in range(budget.tokens))
    if len(candidates) <= budget.exhaustive_limit:
        total = budget.sweeps * budget.tokens
        for step in range(total):
            slot = step % budget.tokens
            options = [(*words[:slot], w, *words[slot + 1 :]) for _, w in candidates]
            losses = score(options)
            words = options[min(range(len(options)), key=losses.__getitem__)]
            if on_step:
                on_step(step + 1, total)
    else:
        words = _gradient_guided(pipe, objective, template, candidates, words, score, budget, on_step)
    ranked = sorted(seen.items(), key=lambda item: (item[1], item[0]))
    return [Found(_prompt(template, w), w, loss) for w, loss in ranked[: budget.keep]]


def _gradient_guided(
    pipe: Any,
    objective: _Objective,
    template: str,
    candidates: list[tuple[int, str]],
    words: tuple[str, ...],
    score: Callable[[list[tuple[str, ...]]], list[float]],
    budget: SearchBudget,
    on_step: Callable[[int, int], None] | None,
) -> tuple[str, ...]:
    """GCG over whole-word tokens: gradient-ranked swaps, each scored exactly; keep the best."""
    generator = torch.Generator().manual_seed(budget.seed + 1)
    ids = torch.tensor([i for i, _ in candidates])
    word_of = {i: w for i, w in candidates}
    id_of = {w: i for i, w in candidates}
    prefix = len(token_ids(pipe, template.split("{}")[0])) - 1  # BOS and the words before the slots
    embedding = pipe.text_encoder.get_input_embeddings()
    current = score([words])[0]
    for step in range(budget.steps):
        prompt_ids = token_ids(pipe, _prompt(template, words))
        slots = list(range(prefix, prefix + budget.tokens))
        if [prompt_ids[s] for s in slots if s < len(prompt_ids)] != [id_of[w] for w in words]:
            ranked = torch.stack([torch.randperm(len(ids), generator=generator) for _ in slots])
        else:
            ranked = _gradient_ranks(pipe, objective, embedding, _prompt(template, words), slots, ids)
        top = ranked[:, : budget.top_k]
        options = []
        for _ in range(budget.trials):
            slot = int(torch.randint(0, budget.tokens, (1,), generator=generator))
            pick = int(top[slot, int(torch.randint(0, top.shape[1], (1,), generator=generator))])
            options.append((*words[:slot], word_of[int(ids[pick])], *words[slot + 1 :]))
        losses = score(options)
        best = min(range(len(options)), key=losses.__getitem__)
        if losses[best] < current:
            words, current = options[best], losses[best]
        if on_step:
            on_step(step + 1, budget.steps)
    return words


def _gradient_ranks(
    pipe: Any, objective: _Objective, embedding: torch.nn.Module, prompt: str, slots: list[int], ids: torch.Tensor
) -> torch.Tensor:
    """For each slot, candidate indices ordered by how much swapping them in lowers the loss (first order)."""
    weight = embedding.weight
    assert isinstance(weight, torch.Tensor)
    one_hot = torch.zeros(len(slots), weight.shape[0], dtype=weight.dtype)
    current = token_ids(pipe, prompt)
    for row, slot in enumerate(slots):
        one_hot[row, current[slot]] = 1.0
    one_hot.requires_grad_(True)

    def replace_slots(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        swapped = output.clone()
        swapped[:, slots] = (one_hot @ weight).unsqueeze(0).expand(output.shape[0], -1, -1)
        return swapped

    handle = embedding.register_forward_hook(replace_slots)
    try:
        cond = conditioning.encode(pipe, [prompt], trainable=True)
        loss = objective.loss_rows(cond, 1).sum()
        (gradient,) = torch.autograd.grad(loss, one_hot)
    finally:
        handle.remove()
    return torch.argsort(gradient[:, ids], dim=1)
