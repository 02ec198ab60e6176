"""Train the testbed from scratch on CPU: judges, VAE, then text encoder + UNet.

Order matters: the judges come first so that the VAE's reconstruction can be checked
per concept before any UNet time is spent on latents that lost the concept.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from patchkit.backend import components
from patchkit.backend.protocols import Tokenizer
from patchkit.core.pixels import to_tensor
from patchkit.core.progress import Progress
from patchkit.evaluation.classifier_net import NONE_LABEL, Judge, JudgeNet, save_judge
from patchkit.testbed import world
from patchkit.testbed.synthetic import SyntheticWorld
from patchkit.testbed.tokenizer import write_tokenizer_files

TEXT_ENCODER_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "projection_dim": 64,
    "hidden_act": "quick_gelu",
}
VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "sample_size": world.IMAGE_SIZE,
}
UNET_CONFIG = {
    "sample_size": world.IMAGE_SIZE // 4,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [64, 128],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SCHEDULER_CONFIG = {  # SD 1.x's noise schedule
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class BuildSettings:
    seed: int = 0
    dataset_size: int = 40_000
    judge_steps: int = 2000
    vae_steps: int = 1000
    vae_batch: int = 32
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 6e-4
    ema_decay: float = 0.999
    threads: int = 2
    world_name: str = world.NAME  # which SyntheticWorld; names the RNG streams


@dataclass
class BuildReport:
    settings: BuildSettings
    seconds: dict[str, float] = field(default_factory=dict)
    judge_accuracy: dict[str, float] = field(default_factory=dict)
    reconstruction_rate: dict[str, float] = field(default_factory=dict)
    vae_scaling_factor: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _degrade(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur and noise half the batch, so judges also read a soft, generated-looking image."""
    blurred = F.interpolate(F.interpolate(images, scale_factor=0.5, mode="bilinear"), scale_factor=2, mode="bilinear")
    pick = (torch.rand(images.shape[0], 1, 1, 1, generator=gen) < 0.5).float()
    noise = torch.randn(images.shape, generator=gen) * 0.04
    return (pick * blurred + (1 - pick) * images + noise).clamp(-1, 1)


def judge_labels(w: SyntheticWorld, category: str) -> tuple[str, ...]:
    return (*w.concepts(category), NONE_LABEL)


def _judge_batch(w: SyntheticWorld, category: str, rng: random.Random, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = judge_labels(w, category)
    scenes = [w.judge_scene(category, rng) for _ in range(n)]
    targets = torch.tensor([labels.index(s.label(category) or NONE_LABEL) for s in scenes])
    return to_tensor([w.render(s, rng) for s in scenes]), targets


def _seed_tag(settings: BuildSettings) -> str:
    # The testbed's streams keep their original names, so its build stays reproducible.
    return str(settings.seed) if settings.world_name == world.NAME else f"{settings.world_name}-{settings.seed}"


def train_judge(w: SyntheticWorld, category: str, settings: BuildSettings, progress: Progress) -> tuple[Judge, float]:
    rng = random.Random(f"judge-{category}-{_seed_tag(settings)}")
    gen = torch.Generator().manual_seed(settings.seed)
    labels = judge_labels(w, category)
    net = JudgeNet(len(labels))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=settings.judge_steps)
    net.train()
    for step in range(settings.judge_steps):
        images, targets = _judge_batch(w, category, rng, 64)
        loss = F.cross_entropy(net(_degrade(images, gen)), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        progress(f"judge:{category}", step + 1, settings.judge_steps, {"loss": loss.item()})
    judge = Judge(category, labels, net)
    fresh_rng = random.Random(f"judge-eval-{category}-{_seed_tag(settings)}")
    images, targets = _judge_batch(w, category, fresh_rng, 2000)
    predicted = judge.classify(images)
    accuracy = sum(p == labels[t] for p, t in zip(predicted, targets.tolist(), strict=True)) / len(predicted)
    return judge, accuracy


def _make_dataset(w: SyntheticWorld, settings: BuildSettings) -> tuple[list[str], torch.Tensor]:
    rng = random.Random(f"data-{_seed_tag(settings)}")
    prompts, images = [], []
    for _ in range(settings.dataset_size):
        prompt, scene = w.sample_training_pair(rng)
        prompts.append(prompt)
        images.append(w.render(scene, rng))
    array = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return prompts, torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _as_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def train_vae(pixels: torch.Tensor, settings: BuildSettings, progress: Progress) -> Any:  # diffusers' AutoencoderKL
    vae = components.trainable(components.build_vae(VAE_CONFIG))
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=settings.vae_steps)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    for step in range(settings.vae_steps):
        idx = torch.randint(0, pixels.shape[0], (settings.vae_batch,), generator=gen)
        x = _as_float(pixels[idx])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        progress("vae", step + 1, settings.vae_steps, {"loss": loss.item()})
    vae.eval().requires_grad_(False)
    return vae


@torch.no_grad()
def reconstruction_rates(w: SyntheticWorld, vae: Any, judges: dict[str, Judge], seed: int) -> dict[str, float]:
    """Per concept: how often the judge still names the concept after a VAE round trip."""
    rng = random.Random(f"recon-{seed}")
    rates: dict[str, float] = {}
    for name, category in w.all_concepts():
        scenes = [w.reference_scene(name, category, i) for i in range(64)]
        x = to_tensor([w.render(s, rng) for s in scenes])
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        verdicts = judges[category].classify(recon)
        rates[name] = sum(v == name for v in verdicts) / len(verdicts)
    return rates


@torch.no_grad()
def _encode_all(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for chunk in pixels.split(512):
        dist = vae.encode(_as_float(chunk)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(
    prompts: list[str],
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    scaling_factor: float,
    tokenizer: Tokenizer,
    vocab_size: int,
    max_tokens: int,
    settings: BuildSettings,
    progress: Progress,
) -> tuple[Any, Any]:  # diffusers' UNet2DConditionModel, transformers' CLIPTextModel
    te_config = {
        **TEXT_ENCODER_CONFIG,
        "max_position_embeddings": max_tokens,
        "vocab_size": vocab_size,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    text_encoder: Any = components.trainable(components.build_clip_text_model(te_config))
    unet = components.trainable(components.build_unet(UNET_CONFIG))
    scheduler = components.build_scheduler(SCHEDULER_CONFIG)
    alphas = scheduler.alphas_cumprod
    token_ids = tokenizer(
        prompts, padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt"
    ).input_ids
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=settings.unet_lr, weight_decay=1e-2)
    warmup = 200

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, settings.unet_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(settings.seed + 2)
    for step in range(settings.unet_steps):
        idx = torch.randint(0, len(prompts), (settings.unet_batch,), generator=gen)
        eps_latent = torch.randn(latent_mean[idx].shape, generator=gen)
        latents = (latent_mean[idx] + latent_std[idx] * eps_latent) * scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (settings.unet_batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context = text_encoder(token_ids[idx])[0]
        loss = F.mse_loss(unet(noisy, t, context).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p.detach(), 1 - decay)
        progress("unet", step + 1, settings.unet_steps, {"loss": loss.item()})
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return unet, text_encoder


def build_testbed(out: Path, settings: BuildSettings, progress: Progress, w: SyntheticWorld = world) -> BuildReport:
    """Train every part of world `w`'s model and write the pipeline folder and judges into `out`."""
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    report = BuildReport(settings)
    started = time.perf_counter()

    judges: dict[str, Judge] = {}
    for category in w.CATEGORIES:
        judge, accuracy = train_judge(w, category, settings, progress)
        judges[category] = judge
        report.judge_accuracy[category] = accuracy
        save_judge(judge, out / "judges")
    report.seconds["judges"] = time.perf_counter() - started

    mark = time.perf_counter()
    prompts, pixels = _make_dataset(w, settings)
    report.seconds["dataset"] = time.perf_counter() - mark

    mark = time.perf_counter()
    vae = train_vae(pixels, settings, progress)
    report.reconstruction_rate = reconstruction_rates(w, vae, judges, settings.seed)
    latent_mean, latent_std = _encode_all(vae, pixels)
    scaling_factor = float(1.0 / latent_mean.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    report.vae_scaling_factor = scaling_factor
    report.seconds["vae"] = time.perf_counter() - mark

    tokenizer_dir = out / "tokenizer"
    write_tokenizer_files(w.vocabulary_words(), tokenizer_dir, w.MAX_TOKENS)
    tokenizer = components.load_tokenizer(tokenizer_dir)

    mark = time.perf_counter()
    unet, text_encoder = train_unet(
        prompts, latent_mean, latent_std, scaling_factor, tokenizer, len(tokenizer), w.MAX_TOKENS, settings, progress
    )
    report.seconds["unet"] = time.perf_counter() - mark

    pipeline = components.assemble_sd_pipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=components.build_scheduler(SCHEDULER_CONFIG),
    )
    components.save_pipeline(pipeline, out)
    report.seconds["total"] = time.perf_counter() - started
    (out / "build_report.json").write_text(json.dumps(report.to_json(), indent=2, sort_keys=True))
    return report
