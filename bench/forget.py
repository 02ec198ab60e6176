"""The patchkit trainer against a reference-style loop computing the same loss, side by side.

Run: .venv/bin/python bench/forget.py [--steps 31] [--sd15-steps 5] [--root /tmp/patchkit-bench] [--skip-sd15]

The reference-style loop follows the reference code's shape: it VAE-encodes the batch's
images at every step, keeps a frozen deep copy of the UNet for the targets, and trains the
whole UNet with AdamW. patchkit encodes the images once, trains rank-4 adapters on the
attn2 to_k/to_v projections only, and gets its frozen targets from the same UNet with the
adapters switched off. Both draw the same batches, noise and timesteps from one seed, so
their loss at step 0 must be equal (printed). A third arm, "stepwise", is patchkit with the
frozen model called once per step instead of once per few steps (the batching only pays on
small models, where per-call overhead dominates). Each arm runs in its own process; peak
RSS comes from wait4(); seconds per step are the mean after step 0. Rows:
  (a) the testbed (32 px);
  (b) an SD 1.5-shaped random-weight model (fp32) at 256 px, batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ARM = r"""
import copy, json, sys, time
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from patchkit.backend import conditioning, lora_layers, pipeline
from patchkit.models import refs
from patchkit.backend.attention import record_cross_attention
from patchkit.services.worlds import world_for
from patchkit.training import fmn
from patchkit.training.prompts import Concept, training_prompts, world_retain_prompts
from patchkit.training.settings import ForgetSettings

model, arm, size, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(2)
ref = refs.resolve(model)
pipe = pipeline.load_pipeline(ref)
if size:
    pipe.unet.register_to_config(sample_size=size // pipe.vae_scale_factor)
pixels = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
concepts = [Concept("circle", "object")]
world = world_for(ref)
items = training_prompts(concepts, world.templates)
retain = world_retain_prompts(world, concepts)[:4] or ["a photo of a dog", "a painting of a house"]
rng = np.random.default_rng(0)
images = [Image.fromarray(rng.integers(0, 256, (pixels, pixels, 3), dtype=np.uint8)) for _ in range(4)]
settings = ForgetSettings(steps=steps, batch_size=batch)
stamps = []


def reference(pipe, concepts, items, images, retain_prompts, settings):
    # fmn.train's loss and draws, in the reference code's shape
    generator = torch.Generator().manual_seed(settings.seed)
    prompts = conditioning.encode(pipe, [i.prompt for i in items])
    anchors = conditioning.encode(pipe, [i.anchor for i in items])
    retain = conditioning.encode(pipe, retain_prompts)
    mask = fmn.position_mask(pipe.tokenizer, prompts.ids, [i.prompt for i in items],
                             [concepts[i.concept].name for i in items], [settings.use_pooler] * len(items))
    eta = torch.tensor([settings.negative_guidance for _ in items])
    scheduler, unet = pipe.scheduler, pipe.unet
    frozen_unet = copy.deepcopy(unet).requires_grad_(False)
    unet.requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=0.0)
    by_concept = {0: list(range(len(images)))}
    b = settings.batch_size
    first = None
    for step in range(settings.steps):
        rows = torch.randint(0, len(items), (b,), generator=generator)
        owners = [by_concept[items[r].concept] for r in rows.tolist()]
        picks = [o[int(torch.randint(0, len(o), (1,), generator=generator))] for o in owners]
        clean = fmn.encode_latents(pipe, [images[p] for p in picks])  # every step, as the reference does
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, t)
        cond = prompts.rows(rows)
        keep = torch.randint(0, retain.ids.shape[0], (b,), generator=generator)
        cond = cond.cat(retain.rows(keep))
        both_noisy, both_t = torch.cat([noisy] * 2), t.repeat(2)
        with torch.no_grad():
            frozen = conditioning.predict(frozen_unet, torch.cat([both_noisy, noisy]), torch.cat([both_t, t]),
                                          cond.cat(anchors.rows(rows)))
        frozen_concept, frozen_rest = frozen[:b], frozen[b:]
        frozen_anchor = frozen_rest[-b:]
        weight = eta[rows].view(-1, *([1] * (noisy.dim() - 1)))
        target = frozen_anchor - weight * (frozen_concept - frozen_anchor)
        with record_cross_attention(unet) as recorder:
            out = conditioning.predict(unet, both_noisy, both_t, cond)
            attention = fmn.attention_loss(recorder.maps, mask[rows], cond.ids.shape[0])
        loss = settings.attention_weight * attention + settings.anchor_weight * F.mse_loss(out[:b], target)
        loss = loss + settings.preserve_weight * F.mse_loss(out[b:], frozen_rest[: out.shape[0] - b])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
        stamps.append(time.perf_counter())
    return first


start = time.perf_counter()
if arm == "stepwise":  # the frozen model called once per step, as before frozen batches spanned steps
    fmn._FROZEN_BATCH_ELEMENTS = 1
if arm in ("patchkit", "stepwise"):
    outcome = fmn.train(pipe, concepts, items, images, [0] * len(images), retain, settings,
                        progress=lambda *a: stamps.append(time.perf_counter()))
    first = outcome.first_loss
else:
    first = reference(pipe, concepts, items, images, retain, settings)
# the mean after step 0: patchkit's frozen targets come a few steps at a time, so single
# steps differ and a median would leave that work out
print(json.dumps({"first_loss": first, "step0": stamps[0] - start,
                  "per_step": (stamps[-1] - stamps[0]) / (len(stamps) - 1)}))
"""

SD15 = """
import sys
from pathlib import Path
from patchkit.services.fixtures import build_random_model
build_random_model("sd15", Path(sys.argv[1]))
"""


def run_arm(model: str, arm: str, size: int, steps: int, batch: int) -> tuple[dict[str, float] | None, float]:
    process = subprocess.Popen([sys.executable, "-c", ARM, model, arm, str(size), str(steps), str(batch)],
                               stdout=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read().decode() if process.stdout else ""
    rss = usage.ru_maxrss / 1024
    if os.waitstatus_to_exitcode(status) != 0:
        return None, rss  # killed for memory, most likely
    return json.loads(out.strip().splitlines()[-1]), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=31, help="steps on the testbed")
    parser.add_argument("--sd15-steps", type=int, default=5, help="steps on the SD 1.5-shaped model")
    parser.add_argument("--root", type=Path, default=Path("/tmp/patchkit-bench"))
    parser.add_argument("--skip-sd15", action="store_true")
    args = parser.parse_args()
    cases = [("(a) testbed, 32 px, batch 4", "testbed", 0, 4, args.steps)]
    if not args.skip_sd15:
        folder = args.root / "sd15-fp32"
        if not (folder / "model_index.json").is_file():
            print("building the SD 1.5-shaped fp32 model (once)...", file=sys.stderr)
            subprocess.run([sys.executable, "-c", SD15, str(folder)], check=True)
        cases.append(("(b) SD 1.5-shaped, 256 px, batch 1", str(folder), 256, 1, args.sd15_steps))
    print(f"{args.steps} steps per arm on (a), {args.sd15_steps} on (b); seconds per step: the mean after step 0; "
          "2 threads")  # fmt: skip
    print("| case | arm | s/step | peak RSS MB | loss at step 0 |")
    print("|---|---|---:|---:|---:|")
    for label, model, size, batch, steps in cases:
        results = {}
        for arm in ("patchkit", "stepwise", "reference"):
            started = time.perf_counter()
            result, rss = run_arm(model, arm, size, steps, batch)
            results[arm] = (result, rss, time.perf_counter() - started)
            shown = (f"{result['per_step']:.2f} | {rss:.0f} | {result['first_loss']:.6f}" if result
                     else f"failed | {rss:.0f} | –")  # fmt: skip
            print(f"| {label} | {arm} | {shown} |", flush=True)
        ours, theirs = results["patchkit"], results["reference"]
        if ours[0] and theirs[0]:
            print(f"| {label} | patchkit / reference | {ours[0]['per_step'] / theirs[0]['per_step']:.2f}x | "
                  f"{ours[1] / theirs[1]:.2f}x | equal: {abs(ours[0]['first_loss'] - theirs[0]['first_loss']) < 1e-5} |")  # fmt: skip  # noqa: E501


if __name__ == "__main__":
    main()
