"""`merge --method fuse --base MODEL`: re-fit the patches jointly on the base's text states (core/fuse.py).

The fit needs what each patch was trained to do, so a parent must record its training
prompts (every patchkit forget and correct does) and edit only cross-attention keys and
values, and the base must be the one the patches were made for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from patchkit.core import fuse
from patchkit.core.fusion import LoraFactors
from patchkit.core.merge import MergedModule
from patchkit.core.tokens import concept_positions
from patchkit.errors import ModelMismatchError, UsageError
from patchkit.io.tensor_spans import ModelSpans
from patchkit.models import refs, weights

PRESERVE_WEIGHT = 1.0  # the retain states weigh as much as all the targets together; chosen a priori, not tuned
RIDGE = 0.01  # as the closed-form method's: keeps N well posed in directions no state spans
_CROSS_ATTENTION = re.compile(r"attn2\.to_[kv]$")


@dataclass(frozen=True)
class Drift:
    patch: str
    stacked: float  # how far the others move this patch's edit of its own target when simply stacked
    fused: float  # the same after the joint re-fit

    def to_json(self) -> dict[str, Any]:
        return {"patch": self.patch, "stacked": self.stacked, "fused": self.fused}


def _checked_parent(name: str, manifest: dict[str, Any], factors: Sequence[LoraFactors]) -> list[str]:
    """The prompts whose states define the parent's edit; refuse a parent that cannot be re-fitted."""
    outside = next((f for f in factors if f.component != "unet" or not _CROSS_ATTENTION.search(f.module)), None)
    if outside is not None:
        raise UsageError(f"{name} edits {outside.component}.{outside.module}: fuse re-fits cross-attention "
                         "keys and values only", hint="merge it with --method concat")  # fmt: skip
    prompts = manifest.get("method", {}).get("settings", {}).get("training_prompts")
    if not prompts:
        raise UsageError(f"{name} records no training prompts, so its edit cannot be re-fitted",
                         hint="fuse the patches it was made from, or merge with --method concat")  # fmt: skip
    placeholders = [c["token"] for c in manifest["concepts"] if str(c.get("token", "")).startswith("<")]
    # a --ti placeholder is not in the base's vocabulary: its prompts would be read as other words
    return [p for p in prompts if not any(token in p for token in placeholders)]


def _mentions(prompt: str, names: Sequence[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(n.lower())}(?!\w)", prompt.lower()) for n in names)


Parent = tuple[str, dict[str, Any], Sequence[LoraFactors]]  # (name@version, manifest, factors)


@dataclass(frozen=True)
class _Problem:
    targets: list[torch.Tensor]  # each parent's target states (rows)
    kept: torch.Tensor  # the states that must read as the base reads them
    own: list[fuse.Factors]  # each parent's factors, its scale and alpha folded into the up factor

    def stacked(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for parent in self.own:
            for module, pair in parent.items():
                out.setdefault(module, []).append(pair)
        return out


@dataclass(frozen=True)
class KnownBase:
    """What a caller already measured of the base (apply's plan): not listed or hashed a second time."""

    fingerprint: str
    spans: ModelSpans


def _problem(
    ref: refs.ModelRef, parents: Sequence[Parent], scales: Sequence[float], reference: str,
    known: KnownBase | None = None,
) -> _Problem:  # fmt: skip
    from patchkit.backend.text_side import load_text_side  # torch-only, no diffusers

    training = [_checked_parent(name, manifest, factors) for name, manifest, factors in parents]
    configs = weights.configs_of(ref.config_folder)
    spans = known.spans if known else weights.model_spans(ref, configs)
    fingerprint = known.fingerprint if known else weights.fingerprint_of(spans)
    for name, manifest, _ in parents:
        if manifest["base"]["fingerprint"] != fingerprint:
            raise ModelMismatchError(f"{name} was made for base {manifest['base']['fingerprint'][:12]}…, not "
                                     f"{reference} ({fingerprint[:12]}…)",
                                     hint="fuse on the base the patches were trained on")  # fmt: skip
    text = load_text_side(ref.config_folder, configs, spans)
    names = [c["name"] for _, manifest, _ in parents for c in manifest["concepts"]]
    every_target = {p for prompts in training for p in prompts}
    retain = sorted({p for _, manifest, _ in parents for p in manifest["method"]["settings"].get("retain_prompts", [])})
    # a retain prompt that names another patch's concept is that patch's to move, not this one's to keep
    kept_prompts = [p for p in retain if p not in every_target and not _mentions(p, names)]

    def rows(prompts: Sequence[str], concepts: Sequence[str] = ()) -> torch.Tensor:
        """The states of `prompts`, from the first token of a concept on (the encoder is causal: what comes
        before it is every prompt's, not the patch's to move), or all of them for kept prompts."""
        encoded = text.encode(list(prompts))
        wanted = [text.tokenizer(name, add_special_tokens=False).input_ids for name in concepts]
        parts = []
        for index in range(len(prompts)):
            ids = encoded.ids[index].tolist()
            starts = [found[0] for w in wanted if (found := concept_positions(ids, w))]
            parts.append(encoded.states[index, min(starts, default=0) :])
        return torch.cat(parts)

    targets = [rows(prompts, [c["name"] for c in manifest["concepts"]])
               for prompts, (_, manifest, _) in zip(training, parents, strict=True)]  # fmt: skip
    kept = rows(kept_prompts) if kept_prompts else torch.zeros(0, text.width)
    own: list[fuse.Factors] = []
    for (_, _, factors), scale in zip(parents, scales, strict=True):
        pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for f in factors:
            factor = scale * (1.0 if f.alpha is None else f.alpha / f.rank)
            pairs[f.module] = (torch.as_tensor(f.down).float(), torch.as_tensor(f.up).float() * factor)
        own.append(pairs)
    return _Problem(targets, kept, own)


def fused_modules(
    reference: str, parents: Sequence[Parent], scales: Sequence[float], config: Any = None
) -> tuple[list[MergedModule], list[Drift]]:
    """The fused modules (one concat LoRA, rank = the parents' ranks summed) and each parent's drift."""
    ref = refs.resolve(reference, config=config, bundled_config=True)
    problem = _problem(ref, parents, scales, reference)
    fitted = fuse.refit(problem.own, fuse.refit_maps(problem.targets, problem.kept, PRESERVE_WEIGHT, RIDGE))
    stacked = problem.stacked()
    drifts = [Drift(name, fuse.drift(problem.own[i], stacked, problem.targets[i]),
                    fuse.drift(problem.own[i], fitted, problem.targets[i]))
              for i, (name, _, _) in enumerate(parents)]  # fmt: skip
    modules = [
        MergedModule("unet", module, torch.cat([d for d, _ in pairs]).contiguous(),
                     torch.cat([u for _, u in pairs], dim=1).contiguous(), 0.0)
        for module, pairs in sorted(fitted.items())
    ]  # fmt: skip
    return modules, drifts


def stacked_drifts(
    ref: refs.ModelRef, parents: Sequence[Parent], scales: Sequence[float], known: KnownBase | None = None
) -> list[float] | None:
    """Each parent's drift when the parents are simply summed (apply, stacks); None when one cannot be measured."""
    try:
        problem = _problem(ref, parents, scales, ref.reference, known)
    except (UsageError, ModelMismatchError):  # no training prompts, other modules, or forced onto another base
        return None
    stacked = problem.stacked()
    return [fuse.drift(problem.own[i], stacked, problem.targets[i]) for i in range(len(parents))]
