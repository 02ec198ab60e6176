"""`patchkit import`: LoRAs and edited weights from other tools become patches bound to a base.

Every source here is a real file in the layout its tool writes: a PEFT LoRA (with PEFT's own
key prefixes), a kohya LoRA (written by diffusers' converter, as A1111 and ComfyUI read it),
and whole edited UNet weights under diffusers and original-SD names, as ESD and UCE save
them. The imported patch is applied to the base and compared with the edit itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from patchkit.core.ldm_layout import unet_key_to_ldm
from patchkit.errors import CorruptFileError, InputError, ModelMismatchError, PickleRefusedError, UsageError
from patchkit.io.patch_file import read_intact_patch
from patchkit.models import refs, weights
from patchkit.models.refs import ModelSource
from patchkit.services.apply import apply
from patchkit.services.export import export
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.import_lora import ImportRequest, import_lora
from patchkit.services.sources import PatchSource


def _request(folder: Path, source: Path, out: Path, **kwargs) -> ImportRequest:
    return ImportRequest(source=source, model=ModelSource(str(folder)), concepts=["circle"], category="object",
                         output=out, **kwargs)  # fmt: skip


def _unet(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / "unet").glob("*.safetensors"))))


def _edited(folder: Path, rank: int = 3, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The whole UNet with a rank-`rank` edit of every attn2.to_k/to_v, as UCE leaves it; and the base."""
    base = _unet(folder)
    g = torch.Generator().manual_seed(seed)
    edited = {}
    for key, value in base.items():
        if key.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
            delta = torch.randn(value.shape[0], rank, generator=g) @ torch.randn(rank, value.shape[1], generator=g)
            edited[key] = value + 0.02 * delta
        else:
            edited[key] = value.clone()
    return edited, base


def test_a_kohya_lora_imports_to_the_very_patch_it_came_from(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    original = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle", magnitude=0.3)
    kohya = export(original, "kohya", tmp_path / "k.safetensors").output
    bare = tmp_path / "civitai.safetensors"
    save_file(load_file(str(kohya)), str(bare))  # what a kohya trainer writes: no patchkit manifest
    result = import_lora(_request(folder, bare, tmp_path / "imported.safetensors"))
    assert result.kind == "kohya" and result.rank == 4
    assert result.patch_id == read_intact_patch(original).patch_id  # the same deltas, bit for bit
    manifest = read_intact_patch(result.output).manifest
    assert manifest["method"]["name"] == "import" and manifest["method"]["settings"]["source"] == "kohya"
    assert manifest["base"]["fingerprint"] == weights.describe(refs.resolve(str(folder))).fingerprint


def test_peft_prefixes_and_adapter_names_are_read(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    original = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle", magnitude=0.3)
    tensors = load_file(str(original))
    peft = {k.replace("unet.", "base_model.model.", 1).replace(".weight", ".default.weight"): v
            for k, v in tensors.items()}  # fmt: skip
    save_file(peft, str(tmp_path / "adapter_model.safetensors"))
    result = import_lora(_request(folder, tmp_path / "adapter_model.safetensors", tmp_path / "i.safetensors"))
    assert result.kind == "peft" and result.patch_id == read_intact_patch(original).patch_id


@pytest.mark.parametrize("names", ["diffusers", "original-sd"])
def test_edited_weights_become_a_patch_that_applies_as_the_edit(tiny_models, tmp_path, names):
    folder, _ = tiny_models["sd15"]
    edited, base = _edited(folder, rank=3)
    if names == "original-sd":
        config = weights.describe(refs.resolve(str(folder))).configs["unet"]
        stored = {f"model.diffusion_model.{unet_key_to_ldm(k, config)}": v for k, v in edited.items()}
    else:
        stored = edited
    save_file(stored, str(tmp_path / "esd.safetensors"))
    result = import_lora(_request(folder, tmp_path / "esd.safetensors", tmp_path / "i.safetensors", method="esd"))
    changed = sum(1 for k in edited if not torch.equal(edited[k], base[k]))
    assert result.kind == "weights" and result.modules == changed and result.unchanged == len(edited) - changed
    assert result.rank == 3 and result.error is not None and result.error < 1e-5  # a rank-3 edit needs rank 3
    settings = read_intact_patch(result.output).manifest["method"]["settings"]
    assert settings["source_method"] == "esd" and settings["svd_rank"] == 3
    patched = apply(str(folder), [PatchSource(result.output)], tmp_path / "patched").output
    after = _unet(patched)
    worst = max(float((after[k] - edited[k]).abs().max()) for k in edited)
    assert worst < 1e-4  # the applied patch is the edit


def test_a_rank_below_the_edit_costs_error_that_is_reported_and_bounded(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    edited, _ = _edited(folder, rank=6)
    save_file(edited, str(tmp_path / "uce.safetensors"))
    said: list[str] = []
    cut = import_lora(
        _request(folder, tmp_path / "uce.safetensors", tmp_path / "b.safetensors", rank=2), say=said.append
    )
    assert cut.rank == 2 and cut.error is not None and 0.2 < cut.error < 1.0
    assert any(m.startswith("warning: --rank 2 leaves") for m in said)
    exact = import_lora(_request(folder, tmp_path / "uce.safetensors", tmp_path / "c.safetensors"))
    assert exact.rank == 6


def test_sources_that_do_not_fit_the_base_are_refused_naming_the_first_key(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    xl_folder, _ = tiny_models["sdxl"]
    xl = synthetic_patch(str(xl_folder), tmp_path / "xl.safetensors", concept="circle", magnitude=0.3)
    with pytest.raises(ModelMismatchError, match=r"do not make the base's|not in the base's UNet"):
        import_lora(_request(folder, xl, tmp_path / "o.safetensors"))
    edited, _ = _edited(folder)
    save_file(
        {"down_blocks.9.attentions.0.proj_in.weight": torch.zeros(2, 2), **edited}, str(tmp_path / "x.safetensors")
    )
    with pytest.raises(ModelMismatchError, match=r"'down_blocks\.9\.attentions\.0\.proj_in\.weight' is not in"):
        import_lora(_request(folder, tmp_path / "x.safetensors", tmp_path / "o.safetensors"))
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8)},
              str(tmp_path / "te.safetensors"))  # fmt: skip
    with pytest.raises(InputError, match="text-encoder weight"):
        import_lora(_request(folder, tmp_path / "te.safetensors", tmp_path / "o.safetensors"))
    nan = dict(edited)
    key = next(k for k in nan if k.endswith("attn2.to_k.weight"))
    nan[key] = nan[key].clone()
    nan[key][0, 0] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CorruptFileError, match="NaN or Inf"):
        import_lora(_request(folder, tmp_path / "nan.safetensors", tmp_path / "o.safetensors"))
    save_file(_unet(folder), str(tmp_path / "same.safetensors"))
    with pytest.raises(InputError, match="changes nothing"):
        import_lora(_request(folder, tmp_path / "same.safetensors", tmp_path / "o.safetensors"))
    conv = dict(_unet(folder))
    ckey = next(k for k in conv if conv[k].ndim == 4)
    conv[ckey] = conv[ckey] + 1
    save_file(conv, str(tmp_path / "conv.safetensors"))
    with pytest.raises(InputError, match="not a linear weight"):
        import_lora(_request(folder, tmp_path / "conv.safetensors", tmp_path / "o.safetensors"))
    torch.save(edited, tmp_path / "esd.pt")
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        import_lora(_request(folder, tmp_path / "esd.pt", tmp_path / "o.safetensors"))
    colour = ImportRequest(source=tmp_path / "x.safetensors", model=ModelSource(str(folder)), concepts=["circle"],
                           category="colour", output=tmp_path / "o.safetensors")  # fmt: skip
    with pytest.raises(UsageError, match="unknown category"):
        import_lora(colour)
    assert not (tmp_path / "o.safetensors").exists()  # nothing written by any refusal


def test_a_pickle_is_read_with_allow_pickle_and_a_fifo_never_blocks(tiny_models, tmp_path):
    import os

    folder, _ = tiny_models["sd15"]
    edited, _ = _edited(folder)
    torch.save(edited, tmp_path / "esd.pt")
    result = import_lora(_request(folder, tmp_path / "esd.pt", tmp_path / "p.safetensors", allow_pickle=True))
    assert result.kind == "weights" and result.rank == 3
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(InputError, match=r"FIFO|not a regular file"):
        import_lora(_request(folder, tmp_path / "fifo.pt", tmp_path / "q.safetensors", allow_pickle=True))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patchkit", *args], capture_output=True, text=True, timeout=300)


def test_cli_import_writes_both_layouts_and_refuses_in_one_line(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    edited, _ = _edited(folder)
    save_file(edited, str(tmp_path / "esd.safetensors"))
    base = ["--base", str(folder), "-c", "circle", "--category", "object"]
    run = _cli("import", str(tmp_path / "esd.safetensors"), *base, "-o", str(tmp_path / "p.safetensors"))
    assert run.returncode == 0, run.stderr
    assert "rank 3: error 0.00% overall" in run.stderr
    assert (
        read_intact_patch(tmp_path / "p.kohya.safetensors").patch_id
        == read_intact_patch(tmp_path / "p.safetensors").patch_id
    )
    bad = _cli("import", str(tmp_path / "missing.safetensors"), *base, "-o", str(tmp_path / "q.safetensors"))
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 3 and "Traceback" not in bad.stderr and len(lines) == 2
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
