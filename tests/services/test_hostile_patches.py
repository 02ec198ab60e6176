"""Patches and numbers no verb may take: NaN/Inf weights, deltas that change nothing, absurd scales,
the same patch twice. Each is refused where it enters, by the one reader every verb shares."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from patchkit.core.patch_id import patch_id_of
from patchkit.core.stack import StackError
from patchkit.errors import CorruptFileError, InputError, UsageError
from patchkit.io.patch_file import read_patch
from patchkit.services import registry
from patchkit.services.apply import apply
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.merge import merge
from patchkit.services.patches import write_patch
from patchkit.services.sources import PatchSource, read_stack
from patchkit.services.stack import add_patch, new_stack


@pytest.fixture
def good(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    return folder, synthetic_patch(str(folder), tmp_path / "good.safetensors", concept="circle")


def _rewritten(source, out, edit):
    """`source` with its tensors edited and a manifest whose patch id matches: valid, signable, hostile."""
    tensors = {k: v.clone() for k, v in load_file(str(source)).items()}
    tensors = edit(tensors)
    manifest = dict(read_patch(source).manifest, patch_id=patch_id_of(tensors))
    write_patch(out, tensors, manifest, family="sd1", rank=4, resolution=64, base_name="x")
    return out


def _nan(tensors):
    key = sorted(k for k in tensors if "lora_B" in k)[0]
    tensors[key][0, 0] = float("nan")
    return tensors


def _inf_bf16(tensors):
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].to(torch.bfloat16)
    tensors[key][0, 0] = float("inf")
    return tensors


def _zero(tensors):
    return {k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in tensors.items()}


@pytest.mark.parametrize(
    ("edit", "error", "needle"),
    [(_nan, CorruptFileError, "NaN or Inf"), (_inf_bf16, CorruptFileError, "NaN or Inf"),
     (_zero, InputError, "only zero deltas")],
)  # fmt: skip
def test_every_verb_refuses_a_hostile_patch_and_writes_nothing(good, tmp_path, edit, error, needle):
    folder, patch = good
    bad = _rewritten(patch, tmp_path / "bad.safetensors", edit)
    with pytest.raises(error, match=needle):
        apply(str(folder), [PatchSource(bad)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(error, match=needle):
        merge([patch, bad], tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(error, match=needle):
        registry.add(bad)
    assert registry.entries() == []
    stack = tmp_path / "s.stack.json"
    new_stack(str(folder), stack)
    with pytest.raises(error, match=needle):
        add_patch(stack, bad)
    assert read_stack(stack).data["patches"] == []


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 1e39, -1e308, 101.0])
def test_absurd_scales_are_refused_everywhere_they_enter(good, tmp_path, scale):
    folder, patch = good
    with pytest.raises(UsageError, match="scale"):
        apply(str(folder), [PatchSource(patch, scale)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="merge weight"):
        merge([patch, synthetic_patch(str(folder), tmp_path / "o.safetensors", concept="ring", seed=3)],
              tmp_path / "m.safetensors", weights=[scale, 1.0])  # fmt: skip
    stack = tmp_path / "s.stack.json"
    new_stack(str(folder), stack)
    with pytest.raises(UsageError, match="--scale"):
        add_patch(stack, patch, scale=scale)


def test_a_stack_file_edited_to_hold_nan_is_refused(good, tmp_path):
    folder, patch = good
    stack = tmp_path / "s.stack.json"
    new_stack(str(folder), stack)
    add_patch(stack, patch)
    data = json.loads(stack.read_text())
    data["patches"][0]["scale"] = float("nan")
    stack.write_text(json.dumps(data))  # Python writes NaN, which is not JSON
    with pytest.raises(StackError, match="NaN is not a JSON number"):
        read_stack(stack)


def test_the_same_patch_twice_is_refused_by_apply_as_by_merge(good, tmp_path):
    folder, patch = good
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(patch.read_bytes())  # another file, the same patch id
    with pytest.raises(UsageError, match="given twice"):
        apply(str(folder), [PatchSource(patch), PatchSource(copy)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="given twice"):
        merge([patch, copy], tmp_path / "m.safetensors")


def test_a_tensor_the_manifest_does_not_declare_is_refused(good, tmp_path):
    """A text-encoder LoRA slipped into a UNet patch was applied as if declared."""
    folder, patch = good

    def add_text_encoder(tensors):
        tensors["text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_A.weight"] = torch.ones(2, 32)
        tensors["text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_B.weight"] = torch.ones(32, 2)
        return tensors

    bad = _rewritten(patch, tmp_path / "bad.safetensors", add_text_encoder)
    with pytest.raises(CorruptFileError, match="not among the modules its manifest declares"):
        apply(str(folder), [PatchSource(bad)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_signature_that_does_not_verify_is_warned_about_when_policy_is_off(good, tmp_path):
    from patchkit.services import signing

    folder, patch = good
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    signing.trust_store().add(pair.public, "team")
    other = synthetic_patch(str(folder), tmp_path / "other.safetensors", concept="ring", seed=5)
    signing.sign(other, pair.private)
    (tmp_path / "good.safetensors.sig").write_bytes((tmp_path / "other.safetensors.sig").read_bytes())  # a wrong .sig
    result = apply(str(folder), [PatchSource(patch)], tmp_path / "out", require_signed=False)
    assert result.patches[0].warning and "does not verify" in result.patches[0].warning
    clean = apply(str(folder), [PatchSource(other)], tmp_path / "out2", require_signed=False)
    assert clean.patches[0].warning is None


def test_a_base_folder_with_a_broken_config_is_refused_not_copied(good, tmp_path):
    import shutil

    from patchkit.errors import NotAPipelineError

    folder, patch = good
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "unet" / "config.json").write_text('{"sample_size": 8,')
    with pytest.raises(NotAPipelineError, match="not valid JSON"):
        apply(str(broken), [PatchSource(patch)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
