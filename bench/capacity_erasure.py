"""Experiment (issue 18): erase the concept's *capacity*, not its name, and attack the result.

Run: .venv/bin/python bench/capacity_erasure.py --concepts circle alice neon [--rounds 3] [--out FILE]

Not a patchkit method yet. Every key/value edit patchkit ships (FMN, the closed form) is
undone by attack/1's inversion (0.72-1.00 on all 13 testbed concepts), because the UNet can
still draw the concept from some text state. This trains a patch that goes after that:

- adapters (rank 4) on the image pathway too: attn1 q/k/v/out, attn2 k/v/out, ff in/out;
- FMN's anchor loss on the concept's prompts (negative guidance `--eta`), plus an ESD-u
  style term on the concept's latents under the *empty* prompt, pushed away from the
  concept by the same guidance, so no conditioning finds it easily;
- preservation on the retain prompts' *own* images (the base draws one per retain
  prompt), under their prompts and under the empty prompt; a default forget distils the
  retain prompts on the concept's latents, which keeps the UNet able to denoise them;
- adversarial rounds: the steps are split in `--rounds + 1` parts, and before each part
  after the first a 150-step textual inversion through the current patch, on the training
  images (never the references, seeds 70,000 up), learns a token that still draws the
  concept; the training then forgets through every token found.

The training prompts and retain prompts are a default `patchkit forget`'s (world A's
training phrasings, never the bench's); the patch goes through `patchkit import`, then the
whole `patchkit score` and `patchkit attack` commands, in their own processes. Results are in
docs/attack.md ("Erasing the capacity").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from patchkit.backend import conditioning, lora_layers, pipeline
from patchkit.backend.inversion import InversionBudget, invert_token
from patchkit.backend.sampling import SamplerSettings, generate
from patchkit.models.refs import ModelSource
from patchkit.services.forget_plan import fit_to_model, plan_forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.fmn import _encode_latents
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

CATEGORIES = {
    "alice": "id", "bella": "id", "carl": "id", "john doe": "id",
    "circle": "object", "ring": "object", "square": "object", "triangle": "object",
    "neon": "style", "noir": "style", "pastel": "style", "sunset": "style", "gore": "nsfw",
}  # fmt: skip
WIDE = ("attn2.to_k", "attn2.to_v", "attn2.to_out.0", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
        "ff.net.0.proj", "ff.net.2")  # fmt: skip
CLI = [sys.executable, "-m", "patchkit"]


def train(concept: str, category: str, out: Path, args: argparse.Namespace) -> float:
    """Train the capacity-erasure adapters for one concept and write them as a PEFT LoRA; returns seconds."""
    started = time.perf_counter()
    plan = plan_forget(ForgetRequest(ModelSource("testbed"), (Concept(concept, category),), out.with_suffix(".x"),
                                     settings=ForgetSettings()))  # fmt: skip
    pipe = pipeline.load_pipeline(plan.ref)
    items, retain = fit_to_model(plan, pipe, None)
    prompts, anchors = [it.prompt for it in items], [it.anchor for it in items]
    held = list(retain.prompts[: args.retain_images])
    concept_images = generate(pipe, [prompts[k % len(prompts)] for k in range(16)], [10_000 + k for k in range(16)],
                              SamplerSettings())  # fmt: skip
    retain_images = generate(pipe, held, [20_000 + k for k in range(len(held))], SamplerSettings())
    concept_latents, retain_latents = _encode_latents(pipe, concept_images), _encode_latents(pipe, retain_images)
    named, anchored = conditioning.encode(pipe, prompts), conditioning.encode(pipe, anchors)
    kept, empty = conditioning.encode(pipe, held), conditioning.encode(pipe, [""])
    unet, scheduler = pipe.unet, pipe.scheduler
    unet.requires_grad_(False)
    adapters = lora_layers.inject(unet, WIDE, 4, 0)
    params = lora_layers.parameters(adapters)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    batch, horizon = 4, scheduler.config.num_train_timesteps
    per_round = args.steps // (args.rounds + 1)
    blank = empty.rows(torch.zeros(batch, dtype=torch.long))
    for step in range(args.steps):
        if args.rounds and step and step % per_round == 0 and step // per_round <= args.rounds:
            found = step // per_round
            budget = InversionBudget(steps=150, placeholder=f"<adv{found}>")
            pipe = invert_token(pipe, concept_images, "a photo of a {}", budget=budget, seed=70_000 + found)
            for param in params:  # the inversion froze the whole UNet, adapters included
                param.requires_grad_(True)
            tokens = [f"<adv{k}>" for k in range(1, found + 1)]
            named = conditioning.encode(pipe, prompts + [f"a photo of a {t}" for t in tokens] + tokens)
            anchored = conditioning.encode(pipe, anchors + ["a photo of a"] * found + [""] * found)
        rows = torch.randint(0, named.ids.shape[0], (batch,), generator=generator)
        picks = torch.randint(0, len(concept_latents), (batch,), generator=generator)
        t = torch.randint(0, horizon, (batch,), generator=generator)
        noisy = scheduler.add_noise(concept_latents[picks], torch.randn(concept_latents[picks].shape,
                                                                        generator=generator), t)  # fmt: skip
        others = torch.randint(0, len(held), (batch,), generator=generator)
        t_kept = torch.randint(0, horizon, (batch,), generator=generator)
        noisy_kept = scheduler.add_noise(retain_latents[others], torch.randn(retain_latents[others].shape,
                                                                             generator=generator), t_kept)  # fmt: skip
        with torch.no_grad(), lora_layers.disabled(adapters):
            concept_out = conditioning.predict(unet, noisy, t, named.rows(rows))
            anchor_out = conditioning.predict(unet, noisy, t, anchored.rows(rows))
            blank_out = conditioning.predict(unet, noisy, t, blank)
            kept_out = conditioning.predict(unet, noisy_kept, t_kept, kept.rows(others))
            kept_blank = conditioning.predict(unet, noisy_kept, t_kept, blank)

        def patched(latents: torch.Tensor, steps: torch.Tensor, cond: conditioning.Conditioning) -> torch.Tensor:
            return conditioning.predict(unet, latents, steps, cond)

        forget = F.mse_loss(patched(noisy, t, named.rows(rows)), anchor_out - args.eta * (concept_out - anchor_out))
        unconditional = F.mse_loss(patched(noisy, t, blank), blank_out - args.eta * (concept_out - blank_out))
        preserve = F.mse_loss(patched(noisy_kept, t_kept, kept.rows(others)), kept_out)
        preserve = preserve + F.mse_loss(patched(noisy_kept, t_kept, blank), kept_blank)
        loss = forget + args.unconditional * unconditional + args.preserve * preserve
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    tensors, _ = lora_layers.peft_state(adapters, 4)
    save_file(tensors, str(out))
    return time.perf_counter() - started


def _json(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", nargs="+", default=["circle", "alice", "neon"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eta", type=float, default=2.0, help="negative guidance")
    parser.add_argument("--unconditional", type=float, default=5.0, help="weight of the empty-prompt term")
    parser.add_argument("--preserve", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--retain-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows here, as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for concept in args.concepts:
            category = CATEGORIES[concept]
            lora, patch = Path(scratch) / "lora.safetensors", Path(scratch) / f"{concept}.safetensors"
            seconds = train(concept, category, lora, args)
            subprocess.run([*CLI, "-q", "import", str(lora), "--base", "testbed", "-c", concept, "--category", category,
                            "--method", "capacity-experiment", "--no-kohya", "-o", str(patch), "--overwrite"],
                           check=True)  # fmt: skip
            scores = _json([*CLI, "score", "testbed", "-p", str(patch), "--json"])
            attack = _json([*CLI, "attack", "testbed", "-c", concept, "-p", str(patch), "--json"])
            rows.append({"concept": concept, "train_s": seconds, "scores": scores, "attack": attack})
            print(f"{concept}: trained in {seconds:.0f} s", flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
