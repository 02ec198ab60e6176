"""`patchkit forget` end to end: a real patch file that diffusers loads, deterministic bytes, clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from patchkit.backend import conditioning, lora_layers, pipeline
from patchkit.backend.lora import load_patch
from patchkit.cli.app import app
from patchkit.core.manifest import MANIFEST_KEY
from patchkit.core.patch_id import patch_id_of
from patchkit.core.patch_metadata import data_section_sha256
from patchkit.errors import InputError, OutputError, UsageError
from patchkit.models import refs, weights
from patchkit.models.refs import ModelSource
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training import fmn
from patchkit.training.fmn import ForgetSettings
from patchkit.training.prompts import Concept, TrainingPrompt
from tests.numerics import assert_paired

QUICK = ForgetSettings(steps=3, images_per_concept=2, batch_size=2)
runner = CliRunner()


def _run(folder: Path, out: Path, **kwargs) -> Path:
    forget(
        ForgetRequest(
            ModelSource(str(folder)),
            [Concept("circle", "object")],
            out,
            settings=kwargs.pop("settings", QUICK),
            **kwargs,
        )
    )
    return out


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_patch_loads_in_diffusers_and_changes_the_output(tiny_models, tmp_path, name):
    folder, _ = tiny_models[name]
    patch = _run(folder, tmp_path / "p.safetensors", retain_prompts=["a photo of alice"])
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))

    def image():
        generator = torch.Generator().manual_seed(0)
        return pipe("a photo of a circle", num_inference_steps=2, generator=generator, output_type="np").images

    before = image()
    load_patch(pipe, patch, adapter_name="forget")
    assert not (image() == before).all()
    with safe_open(str(patch), "pt") as handle:
        keys = list(handle.keys())
        meta = handle.metadata()
    assert keys and all(k.startswith("unet.") and ".attn2.to_" in k and ".lora_" in k for k in keys)
    manifest = json.loads(meta[MANIFEST_KEY])
    assert manifest["concepts"] == [{"name": "circle", "category": "object", "action": "forget", "token": "circle"}]
    assert manifest["schema_version"] == 1 and manifest["patch_id"] == patch_id_of(load_file(str(patch)))
    assert manifest["base"]["fingerprint"] == weights.describe(refs.resolve(str(folder))).fingerprint
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["modelspec.hash_sha256"] == data_section_sha256(patch.read_bytes())
    # ModelSpec 1.0.1 and sd-scripts' labels: SD 2.1-768 is a v-prediction model, and A1111 files a LoRA by ss_v2
    architecture, ss_base, v2, prediction = {
        "sd15": ("stable-diffusion-v1/lora", "sd_v1", "False", "epsilon"),
        "sd21": ("stable-diffusion-v2-768-v/lora", "sd_v2_v", "True", "v"),
        "sdxl": ("stable-diffusion-xl-v1-base/lora", "sdxl_base_v1-0", "False", "epsilon"),
    }[name]
    assert (meta["modelspec.architecture"], meta["ss_base_model_version"], meta["ss_v2"]) == (architecture, ss_base, v2)
    assert meta["modelspec.prediction_type"] == prediction
    assert manifest["base"]["prediction_type"] == ("v_prediction" if prediction == "v" else "epsilon")
    assert meta["ss_network_dim"] == "4"
    # only what is true of this file: no kohya module claim on the PEFT layout, no local path, no fingerprint
    # posing as kohya's model hash, and a description that says what the patch does
    assert "ss_network_module" not in meta and "ss_new_sd_model_hash" not in meta
    assert "/" not in meta["ss_sd_model_name"] and meta["ss_sd_model_name"] == folder.name
    assert meta["modelspec.description"] == "patchkit patch: removes circle (object)"


def test_same_seed_same_bytes(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    folder, _ = tiny_models["sd15"]
    first = _run(folder, tmp_path / "a.safetensors").read_bytes()
    second = _run(folder, tmp_path / "b.safetensors").read_bytes()
    assert first == second
    other = _run(
        folder, tmp_path / "c.safetensors", settings=ForgetSettings(steps=3, images_per_concept=2, batch_size=2, seed=1)
    )
    assert other.read_bytes() != first


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_frozen_targets_batched_over_steps_equal_one_step_at_a_time(tiny_models, monkeypatch, name):
    """The frozen model runs several steps per call; each step must get back its own targets."""
    folder, _ = tiny_models[name]
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
    items = [TrainingPrompt(0, "a photo of a circle", "a photo of an object"),
             TrainingPrompt(0, "a circle, drawn", "an object, drawn")]  # fmt: skip
    prompts = conditioning.encode(pipe, [i.prompt for i in items])
    anchors = conditioning.encode(pipe, [i.anchor for i in items])
    retain = conditioning.encode(pipe, ["a photo of alice", "a photo of a square", "a noir photo"])
    size = pipe.unet.config.sample_size
    latents = torch.randn((3, pipe.unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(1))
    draws = fmn._draw_steps(6, 2, items, {0: [0, 1, 2]}, 3, latents.shape[1:], 1000, torch.Generator().manual_seed(0))
    adapters = lora_layers.inject(pipe.unet, ("attn2.to_k", "attn2.to_v"), 2, 0, full=False)
    eta = torch.tensor([1.0, 0.5])

    def targets() -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        run = fmn._frozen_targets(pipe.unet, adapters, draws, latents, pipe.scheduler, prompts, anchors, retain, eta)
        return list(run)

    batched = targets()
    monkeypatch.setattr(fmn, "_FROZEN_BATCH_ELEMENTS", 1)  # one step per call
    stepwise = targets()
    assert len(batched) == len(stepwise) == 6
    for target, rest in batched:
        assert target.shape == (2, *latents.shape[1:]) and rest is not None and rest.shape == target.shape
    # Another batch shape takes another kernel path (oneDNN/MKL/OpenBLAS reorder the sums), so
    # the two runs agree to a few ulps, not bit for bit; what must hold is that each step gets
    # back its own targets: far closer to its stepwise twin than to any other step's.
    for part in (0, 1):
        ours = [step[part] for step in batched]
        theirs = [step[part] for step in stepwise]
        _, wrong = assert_paired(ours, theirs)
        assert wrong > 0.01  # the steps really differ, so a wrong pairing is visible
        with pytest.raises(AssertionError, match="not paired"):  # the check fails for a reversed split
            assert_paired(ours, theirs[::-1])


TINY = ForgetSettings(steps=1, images_per_concept=1)
CIRCLE = [Concept("circle", "object")]
BAD_INPUTS = {
    "category": ([Concept("circle", "texture")], QUICK, None, UsageError, "unknown category"),
    "rank-zero": (CIRCLE, ForgetSettings(rank=0, steps=1, images_per_concept=1), None, UsageError, r"outside 1\.\."),
    "rank-too-large": (
        CIRCLE,
        ForgetSettings(rank=999, steps=1, images_per_concept=1),
        None,
        UsageError,
        r"outside 1\.\.",
    ),
    "not-in-prompt": ([Concept(" ".join(["circle"] * 90), "object")], TINY, None, UsageError, "no training prompt"),
    "missing-folder": (CIRCLE, TINY, "missing/p.safetensors", OutputError, "does not exist"),
    "no-concept": ([], TINY, None, UsageError, "no concept"),
    "ti-correction": (
        [Concept("circle", "object", target="square")],
        ForgetSettings(steps=1, images_per_concept=1, textual_inversion=True),
        None,
        UsageError,
        "a correction has none",
    ),
    "ti-steps": (
        CIRCLE,
        ForgetSettings(steps=1, images_per_concept=1, textual_inversion=True, ti_steps=0),
        None,
        UsageError,
        "at least 1",
    ),
    "context-is-concept": ([Concept("circle", "object", context="circle")], TINY, None, UsageError, "other than"),
    # numbers that cannot train a real patch: refused before any work (a "-5 steps" patch of zeros, NaN weights)
    "steps-negative": (CIRCLE, ForgetSettings(steps=-5, images_per_concept=1), None, UsageError, r"--steps -5"),
    "steps-zero": (CIRCLE, ForgetSettings(steps=0, images_per_concept=1), None, UsageError, r"--steps 0 is outside"),
    "lr-nan": (
        CIRCLE,
        ForgetSettings(steps=1, learning_rate=float("nan"), images_per_concept=1),
        None,
        UsageError,
        "--lr nan",
    ),
    "guidance-inf": (
        CIRCLE,
        ForgetSettings(steps=1, negative_guidance=float("inf"), images_per_concept=1),
        None,
        UsageError,
        "--guidance inf",
    ),
    "blank-concept": ([Concept("  ", "object")], TINY, None, UsageError, "name is empty"),
    "hold-states-negative": (
        CIRCLE,
        ForgetSettings(steps=1, held_state_weight=-1.0, images_per_concept=1),
        None,
        UsageError,
        "--hold-states -1",
    ),
    "hold-states-nan": (
        CIRCLE,
        ForgetSettings(steps=1, held_state_weight=float("nan"), images_per_concept=1),
        None,
        UsageError,
        "--hold-states nan",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_writes_nothing(tiny_models, tmp_path, case):
    concepts, settings, relative, error, needle = BAD_INPUTS[case]
    folder, _ = tiny_models["sd15"]
    out = tmp_path / (relative or "p.safetensors")
    with pytest.raises(error, match=needle):
        forget(ForgetRequest(ModelSource(str(folder)), concepts, out, settings=settings))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "xdg-cache"] == []  # the digest cache may fill


def test_existing_output_needs_force(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    out = tmp_path / "p.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        _run(folder, out)
    assert out.read_bytes() == b"keep me"


def test_cli_summary_and_category_count(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    out = tmp_path / "p.safetensors"
    args = ["forget", str(folder), "--concept", "circle", "--concept", "ring", "--category", "object"]
    result = runner.invoke(app, [*args, "--steps", "2", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["concepts"] == ["circle", "ring"] and summary["steps"] == 2 and summary["bytes"] == out.stat().st_size
    )
    bad = runner.invoke(app, [*args, "--category", "id", "--category", "style", "-o", str(tmp_path / "q.safetensors")])
    assert bad.exit_code == 2 and "one --category" in bad.output


def test_images_folder_problems_are_refused_before_any_work(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    images = tmp_path / "imgs"
    images.mkdir()
    out = tmp_path / "p.safetensors"
    cases = [("empty", InputError), ("stray", InputError), ("unreadable", InputError), ("missing", InputError)]
    for case, error in cases:
        for p in images.iterdir():
            p.unlink()
        if case == "stray":
            (images / "notes.txt").write_text("hi")
        if case == "unreadable":
            (images / "broken.png").write_bytes(b"not a png")
        target = tmp_path / "nowhere" if case == "missing" else images
        with pytest.raises(error):
            _run(folder, out, images_dir=target)
        assert not out.exists()


def test_given_images_are_used_and_recorded(tiny_models, tmp_path):
    from PIL import Image

    folder, _ = tiny_models["sd15"]
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (i * 100, 0, 0)).save(images / f"{i}.png")
    result = forget(
        ForgetRequest(ModelSource(str(folder)), CIRCLE, tmp_path / "p.safetensors", settings=QUICK, images_dir=images)
    )
    assert result.images_generated is False
    assert result.manifest["method"]["settings"]["training_images"] == "given"


def test_correct_and_full_and_preset(tiny_models, tmp_path):
    from patchkit.training.presets import preset_concepts

    folder, _ = tiny_models["sd15"]
    corrected = forget(ForgetRequest(
        ModelSource(str(folder)), [Concept("circle", "object", target="square")], tmp_path / "c.safetensors",
        settings=QUICK,
    ))  # fmt: skip
    entry = corrected.manifest["concepts"][0]
    assert entry["action"] == "correct" and entry["target"] == "square"
    full = forget(ForgetRequest(
        ModelSource(str(folder)), CIRCLE, tmp_path / "f.safetensors",
        settings=ForgetSettings(steps=2, images_per_concept=1, batch_size=1, full=True, rank=2),
    ))  # fmt: skip
    assert full.factorisation_error is not None and 0.0 <= full.factorisation_error < 1.0
    assert [c.name for c in preset_concepts("testbed-nsfw")] == ["gore"]
    with pytest.raises(UsageError, match="unknown preset"):
        preset_concepts("violence")


def test_ti_forgets_through_a_learnt_token_and_leaves_its_embedding_beside_the_patch(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    settings = ForgetSettings(steps=3, images_per_concept=2, batch_size=2, textual_inversion=True, ti_steps=3)
    result = forget(ForgetRequest(ModelSource(str(folder)), CIRCLE, tmp_path / "p.safetensors", settings=settings))
    manifest = result.manifest
    assert manifest["concepts"][0]["token"] == "<circle>"
    prompts = manifest["method"]["settings"]["training_prompts"]
    assert any("<circle>" in p for p in prompts) and any("<circle>" not in p and "circle" in p for p in prompts)
    assert result.embeddings == tmp_path / "p.ti.safetensors"
    learnt = load_file(str(result.embeddings))
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
    assert list(learnt) == ["<circle>"] and learnt["<circle>"].shape == (1, pipe.text_encoder.config.hidden_size)
    assert all(k.startswith("unet.") for k in load_file(str(result.output)))  # the embedding is not in the patch
    pipe.load_textual_inversion(str(result.embeddings))  # a standard embedding file
    assert pipe.tokenizer.convert_tokens_to_ids("<circle>") != pipe.tokenizer.unk_token_id
    plain = _run(folder, tmp_path / "plain.safetensors", settings=ForgetSettings(steps=3, images_per_concept=2,
                                                                                   batch_size=2))  # fmt: skip
    assert load_file(str(plain)).keys() == load_file(str(result.output)).keys()
    assert any(not torch.equal(load_file(str(plain))[k], t) for k, t in load_file(str(result.output)).items())


def test_ti_on_sdxl_learns_the_token_in_both_text_encoders(tiny_models, tmp_path):
    folder, _ = tiny_models["sdxl"]
    settings = ForgetSettings(steps=2, images_per_concept=2, batch_size=2, textual_inversion=True, ti_steps=3)
    result = forget(ForgetRequest(ModelSource(str(folder)), CIRCLE, tmp_path / "p.safetensors", settings=settings))
    assert result.manifest["concepts"][0]["token"] == "<circle>"
    learnt = load_file(str(result.embeddings))
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
    widths = {"clip_l": pipe.text_encoder.config.hidden_size, "clip_g": pipe.text_encoder_2.config.hidden_size}
    # [n_vectors, dim]: A1111 and ComfyUI read shape[0] as the vector count (a 1-D clip_g read as 1280 vectors)
    assert {k: tuple(v.shape) for k, v in learnt.items()} == {k: (1, w) for k, w in widths.items()}
    # the SDXL embedding format: loaded once per text encoder, as diffusers documents it
    pipe.load_textual_inversion(learnt["clip_l"], token="<circle>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)  # fmt: skip
    pipe.load_textual_inversion(learnt["clip_g"], token="<circle>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)  # fmt: skip
    for tokenizer, encoder, key in ((pipe.tokenizer, pipe.text_encoder, "clip_l"),
                                    (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")):  # fmt: skip
        row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("<circle>")]
        torch.testing.assert_close(row, learnt[key][0])
        mean = encoder.get_input_embeddings().weight[:-1].mean(0)
        assert not torch.allclose(row, mean)  # trained away from its starting point
    assert all(k.startswith("unet.") for k in load_file(str(result.output)))


def test_sdxl_inversion_of_several_tokens_names_each_and_samples(tiny_models):
    from patchkit.backend.inversion import InversionBudget, invert_token, learnt_embeddings
    from patchkit.backend.sampling import SamplerSettings, generate

    folder, _ = tiny_models["sdxl"]
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    images = [Image.new("RGB", (size, size), colour) for colour in ("red", "blue")]
    for name in ("<a>", "<b>"):
        pipe = invert_token(pipe, images, "a photo of {}", budget=InversionBudget(steps=1, placeholder=name), seed=0)
    learnt = learnt_embeddings(pipe, ["<a>", "<b>"])
    assert sorted(learnt) == ["<a>.clip_g", "<a>.clip_l", "<b>.clip_g", "<b>.clip_l"]
    assert learnt["<a>.clip_g"].shape == (1, pipe.text_encoder_2.config.hidden_size)
    # the capacity probe's next step: sampling with the learnt token through both encoders
    (image,) = generate(pipe, ["a photo of <b>"], [0], SamplerSettings(steps=2, guidance=5.0, batch_size=1))
    assert image.size == (size, size)


def test_an_inversion_can_start_from_an_earlier_token_in_every_encoder(tiny_models):
    """--robust's warm start: a round's token begins where the previous round's ended, not at the mean."""
    from patchkit.backend.inversion import InversionBudget, invert_token, learnt_embeddings

    folder, _ = tiny_models["sdxl"]
    pipe = pipeline.load_pipeline(refs.resolve(str(folder)))
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    images = [Image.new("RGB", (size, size), colour) for colour in ("red", "blue")]
    pipe = invert_token(pipe, images, "a photo of {}", budget=InversionBudget(steps=2, placeholder="<r1>"), seed=0)
    untrained = InversionBudget(steps=0, placeholder="<r2>", start_from="<r1>")
    pipe = invert_token(pipe, images, "a photo of {}", budget=untrained, seed=0)
    learnt = learnt_embeddings(pipe, ["<r1>", "<r2>"])
    for tower in ("clip_l", "clip_g"):
        torch.testing.assert_close(learnt[f"<r2>.{tower}"], learnt[f"<r1>.{tower}"], rtol=0, atol=0)
    cold = invert_token(pipe, images, "a photo of {}", budget=InversionBudget(steps=0, placeholder="<r3>"), seed=0)
    assert not torch.equal(learnt_embeddings(cold, ["<r3>"])["clip_l"], learnt["<r1>.clip_l"])
    with pytest.raises(ValueError, match="no token '<nowhere>'"):
        invert_token(pipe, images, "a photo of {}", budget=InversionBudget(steps=0, placeholder="<r4>",
                                                                          start_from="<nowhere>"), seed=0)  # fmt: skip


def test_context_trains_only_where_both_are_named_and_retains_the_rest():
    from patchkit.core.world import GENERIC_TEMPLATES
    from patchkit.testbed.testbed_world import testbed_world
    from patchkit.training.prompts import is_about, training_prompts, world_retain_prompts

    noir = [Concept("noir", "style", context="circle")]
    world = testbed_world()
    items = training_prompts(noir, world.templates, None, world.context_templates)
    assert [i.prompt for i in items] == ["a circle in the style of noir"]
    assert all("noir" not in i.anchor for i in items)
    retain = world_retain_prompts(world, noir)
    assert "a painting in the style of noir" in retain and "a circle" in retain  # each alone is held
    assert is_about("a circle in the style of noir", noir)
    assert not is_about("a ring in the style of noir", noir)  # whole words: "ring" is not "circle"
    assert not is_about("a painting in the style of noir", noir)
    generic = training_prompts([Concept("Elon Musk", "id", context="Tesla")], GENERIC_TEMPLATES)
    assert generic[0].prompt == "Tesla, a photo of Elon Musk"


def test_cli_context_needs_one_concept(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    args = ["forget", str(folder), "-c", "circle", "-c", "ring", "--category", "object", "--context", "red"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "p.safetensors")])
    assert result.exit_code == 2 and "one --concept at a time" in result.output


def test_pooler_positions_are_marked_per_prompt():
    from transformers import CLIPTokenizer

    from patchkit.testbed.paths import TESTBED_MODEL
    from patchkit.training.fmn import position_mask

    tokenizer = CLIPTokenizer.from_pretrained(TESTBED_MODEL / "tokenizer")
    prompts = ["a circle in the style of noir"] * 2
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    mask = position_mask(tokenizer, ids, prompts, ["noir", "noir"], [True, False])
    noir = ids[0].tolist().index(tokenizer.convert_tokens_to_ids("noir</w>"))
    assert mask[1].nonzero().flatten().tolist() == [noir]  # a disentanglement: the concept's own token only
    assert mask[0, noir] and mask[0].sum() == ids.shape[1] - noir  # forget: it and every end-of-text after it


def test_presets_bring_their_settings_unless_the_command_line_overrides_them(tiny_models, tmp_path):
    from patchkit.io.patch_file import read_patch

    folder, _ = tiny_models["sd15"]
    base = ["forget", str(folder), "--preset", "testbed-nsfw", "--ti-steps", "1", "--json"]
    preset = runner.invoke(app, [*base, "-o", str(tmp_path / "a.safetensors")])
    assert preset.exit_code == 0, preset.output
    settings = read_patch(tmp_path / "a.safetensors").manifest["method"]["settings"]
    assert settings["textual_inversion"] is True and settings["steps"] == 90
    assert (tmp_path / "a.ti.safetensors").is_file()
    told = runner.invoke(app, [*base, "--steps", "1", "--no-ti", "-o", str(tmp_path / "b.safetensors")])
    assert told.exit_code == 0, told.output
    settings = read_patch(tmp_path / "b.safetensors").manifest["method"]["settings"]
    assert settings["textual_inversion"] is False and settings["steps"] == 1
    assert not (tmp_path / "b.ti.safetensors").exists()


def test_cli_correct_records_its_target_author_and_license(tiny_models, tmp_path):
    from patchkit.io.patch_file import read_patch

    folder, _ = tiny_models["sd15"]
    out = tmp_path / "c.safetensors"
    args = ["correct", str(folder), "-c", "circle", "--to", "square", "--category", "object", "--steps", "1"]
    result = runner.invoke(app, [*args, "--author", "Release Team", "--license", "CC-BY-4.0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["concepts"] == ["circle -> square"]
    manifest = read_patch(out).manifest
    assert (manifest["author"], manifest["license"]) == ("Release Team", "CC-BY-4.0")
    assert manifest["concepts"][0]["target"] == "square"


def test_author_and_license_reach_the_modelspec_keys_loaders_read(tiny_models, tmp_path):
    """Issue 19.8: --author/--license were recorded in the manifest only, where no loader looks."""
    folder, _ = tiny_models["sd15"]
    out = tmp_path / "p.safetensors"
    forget(ForgetRequest(ModelSource(str(folder)), [Concept("circle", "object")], out, method="closed-form",
                         author="Release Team", license_id="apache-2.0"))  # fmt: skip
    with safe_open(str(out), "pt") as handle:
        meta = handle.metadata()
    assert meta["modelspec.author"] == "Release Team" and meta["modelspec.license"] == "apache-2.0"
    bare = tmp_path / "bare.safetensors"
    forget(ForgetRequest(ModelSource(str(folder)), [Concept("circle", "object")], bare, method="closed-form"))
    with safe_open(str(bare), "pt") as handle:
        assert not {"modelspec.author", "modelspec.license"} & set(handle.metadata())  # absent, not empty
