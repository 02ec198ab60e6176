"""`apply` / `revert` end to end on real files: layouts, provenance, exact fusion, bit-exact revert, refusals."""

from __future__ import annotations

import errno
import filecmp
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from patchkit.core.fingerprint import tensor_bytes
from patchkit.core.fusion import lora_factors
from patchkit.errors import (
    CorruptFileError,
    InputError,
    ModelMismatchError,
    OutputError,
    PolicyError,
    TrustError,
    UsageError,
)
from patchkit.io import rewrite
from patchkit.io.patched_output import PROVENANCE_FILE, PROVENANCE_KEY, REVERT_FILE
from patchkit.models import refs, weights
from patchkit.services.apply import apply, revert
from patchkit.services.fixtures import build_random_model, synthetic_patch
from patchkit.services.sources import PatchSource
from tests.helpers import patch_deltas
from tests.numerics import assert_within, gamma


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


@pytest.fixture(scope="module")
def fp16_sd15(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fp16")
    result = build_random_model("sd15", root / "sd15", tiny=True, dtype="fp16", single_file=root / "sd15.safetensors")
    return result.folder, result.single_file


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_folder_and_single_file_round_trip(tiny_models, tmp_path, name):
    folder, single = tiny_models[name]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle", magnitude=0.3)
    private = tmp_path / "private"
    private.mkdir()
    as_folder = apply(str(folder), [PatchSource(patch)], tmp_path / "out", revert_data=private / "folder.revert")
    as_file = apply(
        str(single), [PatchSource(patch)], tmp_path / "out.safetensors", config=folder, revert_data=private / "f.revert"
    )
    # the same weights, whatever the layout: one output fingerprint, and the files say so
    assert as_folder.output_fingerprint == as_file.output_fingerprint != as_folder.base_fingerprint
    assert weights.describe(refs.resolve(str(tmp_path / "out"))).fingerprint == as_folder.output_fingerprint
    reread = weights.describe(refs.resolve(str(tmp_path / "out.safetensors"), config=folder))
    assert reread.fingerprint == as_file.output_fingerprint
    assert (tmp_path / "out").is_dir() and (tmp_path / "out.safetensors").is_file()

    revert(str(tmp_path / "out.safetensors"), tmp_path / "back.safetensors", revert_data=private / "f.revert",
           config=folder)  # fmt: skip
    assert filecmp.cmp(single, tmp_path / "back.safetensors", shallow=False)
    revert(str(tmp_path / "out"), tmp_path / "back", revert_data=private / "folder.revert")
    assert _same_tree(folder, tmp_path / "back")
    with pytest.raises(TrustError, match="was not written for"):  # each revert file fits its own output only
        revert(str(tmp_path / "out"), tmp_path / "wrong", revert_data=private / "f.revert")
    assert not (tmp_path / "wrong").exists()
    # the file read without the --config apply had: refused before a byte is written, and the hint says why
    (tmp_path / "kept.safetensors").write_bytes(b"an earlier output")
    with pytest.raises(InputError, match="not as the output apply wrote") as refused:
        revert(str(tmp_path / "out.safetensors"), tmp_path / "kept.safetensors", revert_data=private / "f.revert",
               overwrite=True)  # fmt: skip
    assert "--config" in (refused.value.hint or "")
    assert (tmp_path / "kept.safetensors").read_bytes() == b"an earlier output"  # --overwrite lost nothing


def test_fused_weights_are_base_plus_delta_and_provenance_is_recorded(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    first = synthetic_patch(str(folder), tmp_path / "a.safetensors", concept="circle", seed=1)
    second = synthetic_patch(str(folder), tmp_path / "b.safetensors", concept="noir", category="style", seed=2)
    result = apply(str(folder), [PatchSource(first, 1.0), PatchSource(second, 0.5)], tmp_path / "out")
    unet = "unet/diffusion_pytorch_model.safetensors"
    base, out = load_file(str(folder / unet)), load_file(str(tmp_path / "out" / unet))
    deltas = [patch_deltas(load_file(str(p))) for p in (first, second)]
    changed = [k for k in base if not torch.equal(base[k], out[k])]
    assert sorted(changed) == sorted(deltas[0]) and len(changed) == result.touched
    for key in changed:
        # the deltas come from the same float32 B @ A that apply fuses; what may differ is the
        # order of the three-term sum, two roundings of the magnitudes summed
        expected = base[key] + deltas[0][key] + 0.5 * deltas[1][key]
        magnitude = base[key].double().abs() + deltas[0][key].double().abs() + 0.5 * deltas[1][key].double().abs()
        assert_within(out[key], expected, 2 * gamma(2) * magnitude)

    record = json.loads((tmp_path / "out" / PROVENANCE_FILE).read_text())
    assert record["base_fingerprint"] == result.base_fingerprint
    assert record["output_fingerprint"] == result.output_fingerprint
    assert [(p["name"], p["scale"]) for p in record["patches"]] == [("synthetic-circle", 1.0), ("synthetic-noir", 0.5)]
    with safe_open(str(tmp_path / "out" / unet), "pt") as handle:
        assert json.loads(handle.metadata()[PROVENANCE_KEY]) == record
    # untouched weight files are hard links, configs are copies
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "out" / vae).stat().st_ino == (folder / vae).stat().st_ino
    assert (tmp_path / "out" / "unet/config.json").stat().st_ino != (folder / "unet/config.json").stat().st_ino
    assert not (tmp_path / "out" / REVERT_FILE).exists()  # a released folder carries no original weights


def test_fp16_single_file_stays_fp16_fused_in_float32(fp16_sd15, tmp_path):
    folder, single = fp16_sd15
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle", magnitude=0.05)
    apply(str(single), [PatchSource(patch, 2.0)], tmp_path / "out.safetensors", config=folder)
    base, out = load_file(str(single)), load_file(str(tmp_path / "out.safetensors"))
    assert {t.dtype for t in out.values() if t.is_floating_point()} == {torch.float16}
    factor = lora_factors(load_file(str(patch)))[0]
    from patchkit.core.ldm_layout import UNET_PREFIX, unet_key_to_ldm
    from patchkit.io import pipeline_folder as pf

    key = UNET_PREFIX + unet_key_to_ldm(factor.weight_key, pf.component_config(folder, "unet"))
    # the torch-free fusion must give torch's bits: fp32 sum, one round-to-nearest-even cast
    assert torch.equal(out[key], (base[key].float() + 2.0 * torch.from_numpy(factor.delta())).half())
    assert set(out) == set(base)  # nothing appended: a released file carries no original weights


def test_a_released_checkpoint_holds_nothing_that_restores_the_base(tiny_models, tmp_path):
    """The default output is what ships: its bytes are the base's with only the patched tensors
    changed and a longer header, so no original weight of a replaced tensor survives in it."""
    folder, single = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    result = apply(str(single), [PatchSource(patch)], tmp_path / "o.safetensors", config=folder)
    assert single.stat().st_size == (tmp_path / "o.safetensors").stat().st_size - _header_growth(single, tmp_path)
    base, out = load_file(str(single)), load_file(str(tmp_path / "o.safetensors"))
    changed = [k for k in base if not torch.equal(base[k], out[k])]
    assert len(changed) == result.touched > 0
    released = (tmp_path / "o.safetensors").read_bytes()
    assert not any(tensor_bytes(base[k]) in released for k in changed)  # the removed weights are nowhere in it
    provenance = json.loads(safe_open(str(tmp_path / "o.safetensors"), "pt").metadata()[PROVENANCE_KEY])
    assert provenance["revertible"] is False and provenance["revert_data_sha256"] is None
    with pytest.raises(UsageError, match="holds no revert data"):
        revert(str(tmp_path / "o.safetensors"), tmp_path / "b.safetensors", config=folder)
    assert not (tmp_path / "b.safetensors").exists()


def test_revert_data_is_kept_apart_from_the_output(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    with pytest.raises(OutputError, match="inside the output or the base"):
        apply(str(folder), [PatchSource(patch)], tmp_path / "out", revert_data=tmp_path / "out" / "r.safetensors")
    assert not (tmp_path / "out").exists()
    (tmp_path / "r.safetensors").write_bytes(b"x")
    with pytest.raises(OutputError):  # an existing revert file is not overwritten without --overwrite
        apply(str(folder), [PatchSource(patch)], tmp_path / "out", revert_data=tmp_path / "r.safetensors")
    assert not (tmp_path / "out").exists()


def test_a_damaged_revert_file_is_refused_and_writes_nothing(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    apply(str(folder), [PatchSource(patch)], tmp_path / "out", revert_data=tmp_path / "r.safetensors")
    data = bytearray((tmp_path / "r.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one original byte changed
    (tmp_path / "r.safetensors").write_bytes(bytes(data))
    with pytest.raises(TrustError, match="was not written for"):
        revert(str(tmp_path / "out"), tmp_path / "back", revert_data=tmp_path / "r.safetensors")
    assert not (tmp_path / "back").exists()


def _header_growth(single: Path, tmp_path: Path) -> int:
    return rewrite.raw_header(tmp_path / "o.safetensors").__len__() - rewrite.raw_header(single).__len__()


def test_a_patched_model_is_not_patched_again(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    apply(str(folder), [PatchSource(patch)], tmp_path / "out")
    with pytest.raises(UsageError, match="already a patched checkpoint"):
        apply(str(tmp_path / "out"), [PatchSource(patch)], tmp_path / "twice")


# --- bad input: each refused with a clear error and no output ---------------------------------------


def test_patch_for_another_architecture_names_the_first_mismatching_key(tiny_models, tmp_path):
    patch = synthetic_patch(str(tiny_models["sdxl"][0]), tmp_path / "xl.safetensors", concept="circle")
    with pytest.raises(ModelMismatchError) as caught:
        apply(str(tiny_models["sd15"][0]), [PatchSource(patch)], tmp_path / "out", ignore_base=True)
    assert "attn2.to_k.weight" in caught.value.message or "is not in" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_wrong_base_shows_both_fingerprints_and_force_overrides(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    other = build_random_model("sd15", tmp_path / "other", tiny=True, seed=7).folder
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    ours = weights.describe(refs.resolve(str(folder))).fingerprint
    theirs = weights.describe(refs.resolve(str(other))).fingerprint
    with pytest.raises(ModelMismatchError) as caught:
        apply(str(other), [PatchSource(patch)], tmp_path / "out")
    assert ours in caught.value.message and theirs in caught.value.message
    assert not (tmp_path / "out").exists()
    forced = apply(str(other), [PatchSource(patch)], tmp_path / "out", ignore_base=True)
    assert forced.forced_mismatch == ["p.safetensors"]


def test_missing_module_is_named(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    tensors = load_file(str(patch))
    tensors["unet.no_such_block.attn2.to_k.lora_A.weight"] = torch.zeros(4, 8)
    tensors["unet.no_such_block.attn2.to_k.lora_B.weight"] = torch.zeros(8, 4)
    from patchkit.io.patch_file import read_patch
    from patchkit.services.patches import write_patch

    manifest = read_patch(patch).manifest
    from patchkit.core.patch_id import patch_id_of

    manifest["patch_id"] = patch_id_of(tensors)
    write_patch(tmp_path / "q.safetensors", tensors, manifest, family="sd1", rank=4, resolution=64, base_name="x")
    with pytest.raises(ModelMismatchError, match=r"no_such_block\.attn2\.to_k is not in"):
        apply(str(folder), [PatchSource(tmp_path / "q.safetensors")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_and_pickled_patches(tiny_models, tmp_path):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(patch.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="truncated"):
        apply(str(folder), [PatchSource(truncated)], tmp_path / "out")
    pickled = tmp_path / "p.ckpt"
    torch.save({"a": torch.ones(1)}, pickled)
    with pytest.raises(Exception, match="pickle"):
        apply(str(folder), [PatchSource(pickled)], tmp_path / "out")
    unpaired = tmp_path / "u.safetensors"
    save_file({"unet.a.lora_A.weight": torch.ones(2, 2)}, str(unpaired))
    with pytest.raises(Exception, match="manifest"):
        apply(str(folder), [PatchSource(unpaired)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_must_not_be_the_base(tiny_models, tmp_path):
    folder, single = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    copy = tmp_path / "copy.safetensors"
    shutil.copy(single, copy)
    before = copy.read_bytes()
    for target in (copy, folder, folder / "unet"):
        with pytest.raises(OutputError, match="would overwrite the base"):
            apply(str(copy if target == copy else folder), [PatchSource(patch)], target, overwrite=True, config=folder)
    assert copy.read_bytes() == before


def test_too_little_space_is_refused_before_writing(tiny_models, tmp_path, monkeypatch):
    folder, single = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    monkeypatch.setattr(rewrite.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OutputError, match="MB free but the output needs"):
        apply(str(single), [PatchSource(patch)], tmp_path / "o.safetensors", config=folder)
    assert list(tmp_path.glob("*o.safetensors*")) == []


def test_disk_full_mid_write_leaves_nothing(tiny_models, tmp_path, monkeypatch):
    folder, single = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    calls = {"n": 0}
    real = rewrite._write_at

    def fills_up(fd, data, offset):  # the write seam: the third write finds the disk full
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(rewrite, "_write_at", fills_up)
    for target, kwargs in ((tmp_path / "o.safetensors", {"config": folder}), (tmp_path / "o", {})):
        calls["n"] = 0
        source = single if target.suffix else folder
        with pytest.raises(OutputError, match="no space left"):
            apply(str(source), [PatchSource(patch)], target, **kwargs)
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors", "xdg-cache"]


def test_policy_refuses_unsigned_patches(tiny_models, tmp_path, monkeypatch):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    with pytest.raises(PolicyError, match="not signed"):
        apply(str(folder), [PatchSource(patch)], tmp_path / "out", require_signed=True)
    monkeypatch.setenv("PATCHKIT_REQUIRE_SIGNED", "1")
    with pytest.raises(PolicyError):
        apply(str(folder), [PatchSource(patch)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_policy_refuses_a_valid_signature_from_an_untrusted_key(tiny_models, tmp_path):
    from patchkit.services import registry, signing

    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    (tmp_path / "keys").mkdir()
    stranger = signing.new_key(tmp_path / "keys", "stranger", None)
    signing.sign(patch, stranger.private)
    assert signing.verify(patch, public_key=stranger.public).patch_id  # the signature itself is fine
    with pytest.raises(PolicyError, match="not in the trust store"):
        apply(str(folder), [PatchSource(patch)], tmp_path / "out", require_signed=True)
    with pytest.raises(PolicyError, match="not in the trust store"):
        registry.add(patch, require_signed=True)
    assert not (tmp_path / "out").exists() and registry.entries() == []
    signing.trust_store().add(stranger.public, "now trusted")
    assert apply(str(folder), [PatchSource(patch)], tmp_path / "out", require_signed=True).touched == 20


def test_no_fsync_writes_the_same_bytes_without_flushing(tiny_models, tmp_path, monkeypatch):
    import os

    folder, single = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    apply(str(single), [PatchSource(patch)], tmp_path / "durable.safetensors", config=folder)
    assert synced  # the data and the folder entry
    synced.clear()
    apply(str(single), [PatchSource(patch)], tmp_path / "scratch.safetensors", config=folder, durable=False)
    assert synced == []
    assert (tmp_path / "scratch.safetensors").read_bytes() == (tmp_path / "durable.safetensors").read_bytes()


@pytest.mark.parametrize(("version", "hint"), [(2, "upgrade patchkit"), (None, "edited"), ("1", "edited")])
def test_provenance_of_an_unknown_version_is_refused(tiny_models, tmp_path, version, hint):
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    apply(str(folder), [PatchSource(patch)], tmp_path / "out", revert_data=tmp_path / "r.safetensors")
    record_path = tmp_path / "out" / PROVENANCE_FILE
    record = json.loads(record_path.read_text())
    assert record["schema_version"] == 1
    record["schema_version"] = version
    record_path.write_text(json.dumps(record))
    with pytest.raises(CorruptFileError, match="schema_version") as caught:
        revert(str(tmp_path / "out"), tmp_path / "back", revert_data=tmp_path / "r.safetensors")
    assert hint in (caught.value.hint or "")
    assert not (tmp_path / "back").exists()


def test_the_output_drops_the_base_s_hashes_and_names_its_patches(tiny_models, tmp_path):
    """A ModelSpec-aware loader checks modelspec.hash_sha256 against the file: a copied base hash
    would call the patched file corrupt, so it (and every other hash of the base) is dropped."""
    folder, single = tiny_models["sd15"]
    tagged = tmp_path / "tagged.safetensors"
    metadata = {"modelspec.sai_model_spec": "1.0.1", "modelspec.title": "My SD", "modelspec.hash_sha256": "0xabc",
                "sshs_model_hash": "123", "ss_new_sd_model_hash": "456", "modelspec.author": "me"}  # fmt: skip
    save_file(load_file(str(single)), str(tagged), metadata=metadata)
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    apply(str(tagged), [PatchSource(patch)], tmp_path / "out.safetensors", config=folder)
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as handle:
        out = handle.metadata()
    assert not {"modelspec.hash_sha256", "sshs_model_hash", "ss_new_sd_model_hash"} & set(out)
    assert out["modelspec.title"] == "My SD (patched: synthetic-circle@0.0.1)"
    assert out["modelspec.author"] == "me" and out["modelspec.sai_model_spec"] == "1.0.1"


def test_an_existing_output_names_apply_s_own_flag(tiny_models, tmp_path):
    """The hint for an existing OUT names --overwrite, never --ignore-base (apply's other override)."""
    folder, _ = tiny_models["sd15"]
    patch = synthetic_patch(str(folder), tmp_path / "p.safetensors", concept="circle")
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="already exists") as caught:
        apply(str(folder), [PatchSource(patch)], tmp_path / "out")
    assert "--overwrite" in (caught.value.hint or "") and "--ignore-base" not in (caught.value.hint or "")
