"""Stacks and merges on real patch files: pinned fingerprints reproduced, conflicts refused, signatures checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from patchkit.core.fusion import lora_factors
from patchkit.core.stack import StackError
from patchkit.errors import ConflictError, ModelMismatchError, TrustError, UsageError
from patchkit.io.patch_file import read_patch
from patchkit.services import signing
from patchkit.services.apply import apply
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.merge import merge
from patchkit.services.patches import write_patch
from patchkit.services.sources import read_stack, sources_for
from patchkit.services.stack import add_patch, new_stack, verify_stack
from tests.helpers import patch_deltas
from tests.numerics import assert_within, factor_bound


@pytest.fixture
def patches(tiny_models, tmp_path) -> tuple[Path, list[Path]]:
    folder, _ = tiny_models["sd15"]
    made = [
        synthetic_patch(str(folder), tmp_path / "circle.safetensors", concept="circle", seed=1),
        synthetic_patch(str(folder), tmp_path / "noir.safetensors", concept="noir", category="style", seed=2),
    ]
    return folder, made


def _correction(patch: Path, out: Path, concept: str, target: str) -> Path:
    parsed = read_patch(patch)
    manifest = dict(parsed.manifest, name=f"fix-{concept}-{target}")
    manifest["concepts"] = [{"name": concept, "category": "object", "action": "correct", "target": target,
                             "token": concept}]  # fmt: skip
    write_patch(out, load_file(str(patch)), manifest, family="sd1", rank=4, resolution=64, base_name="x")
    return out


def test_stack_pins_the_output_and_apply_reproduces_it(patches, tmp_path):
    folder, (circle, noir) = patches
    stack_path = tmp_path / "release.stack.json"
    new_stack(str(folder), stack_path)
    add_patch(stack_path, circle)
    stack = add_patch(stack_path, noir, scale=0.5)
    data = json.loads(stack_path.read_text())
    assert [p["source"] for p in data["patches"]] == ["circle.safetensors", "noir.safetensors"]
    assert data["patches"][1]["scale"] == 0.5
    sources, expected = sources_for([stack_path])
    assert sources == stack.sources() and expected == data["expected_output_fingerprint"]
    assert sources_for([stack_path, circle])[1] is None  # only a lone stack pins the output
    assert sources_for([stack_path], scale=0.5)[1] is None
    result = apply(str(folder), sources, tmp_path / "out", expected_fingerprint=expected)
    assert result.output_fingerprint == data["expected_output_fingerprint"]
    assert verify_stack(stack_path, str(folder)).ok
    on_patched = verify_stack(stack_path, str(tmp_path / "out"))
    assert not on_patched.ok and on_patched.checks[0].subject == "base"


def test_stack_refuses_duplicates_other_bases_and_conflicts(patches, tiny_models, tmp_path):
    folder, (circle, _) = patches
    stack_path = tmp_path / "s.stack.json"
    new_stack(str(folder), stack_path)
    add_patch(stack_path, circle)
    with pytest.raises(UsageError, match="already in"):
        add_patch(stack_path, circle)
    other = synthetic_patch(str(tiny_models["sd21"][0]), tmp_path / "sd21.safetensors", concept="circle")
    with pytest.raises(ModelMismatchError, match="pinned to"):
        add_patch(stack_path, other)
    fix = _correction(patches[1][1], tmp_path / "fix.safetensors", "circle", "square")
    with pytest.raises(ConflictError, match="forgotten by"):
        add_patch(stack_path, fix)
    assert len(read_stack(stack_path).data["patches"]) == 1


def test_stack_verify_catches_a_swapped_patch_and_checks_signatures(patches, tmp_path):
    folder, (circle, noir) = patches
    stack_path = tmp_path / "s.stack.json"
    new_stack(str(folder), stack_path)
    add_patch(stack_path, circle)
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    signing.trust_store().add(pair.public, "team")
    signing.sign(circle, pair.private)
    signing.sign(stack_path, pair.private)
    result = verify_stack(stack_path, str(folder), require_signed=True)
    assert result.ok and {c.subject for c in result.checks} >= {"stack signature", "synthetic-circle@0.0.1 signature"}

    circle.write_bytes(noir.read_bytes())  # someone swaps the file under the same name
    failed = [c.subject for c in verify_stack(stack_path, str(folder)).checks if not c.ok]
    assert "synthetic-circle@0.0.1" in failed


def test_stack_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "b.stack.json"
    bad.write_text('{"schema_version": 1, "kind": "patchkit-stack"}')
    with pytest.raises(StackError, match=r"'base' is a required property"):
        read_stack(bad)
    bad.write_text("{not json")
    with pytest.raises(StackError, match="not valid JSON"):
        read_stack(bad)


def test_merge_concat_is_exact_and_records_parents(patches, tmp_path):
    _, (circle, noir) = patches
    result = merge([circle, noir], tmp_path / "m.safetensors", weights=[1.0, -0.5])
    merged = patch_deltas(load_file(str(result.output)))
    parts = [patch_deltas(load_file(str(p))) for p in (circle, noir)]
    factors = {f.weight_key: f for f in lora_factors(load_file(str(result.output)))}
    for key, delta in merged.items():
        # concat sums rank 8 in one product where the parts sum rank 4 twice: bounded, not exact
        assert_within(delta, parts[0][key] - 0.5 * parts[1][key], factor_bound(factors[key]))
    manifest = read_patch(result.output).manifest
    assert [p["name"] for p in manifest["parents"]] == ["synthetic-circle", "synthetic-noir"]
    assert {c["name"] for c in manifest["concepts"]} == {"circle", "noir"}
    assert manifest["method"]["settings"]["method"] == "concat" and manifest["format"]["rank"] == 8


def test_merge_writes_the_kohya_twin_and_refuses_a_patch_beside_its_own_twin(patches, tmp_path):
    from patchkit.services.export import export

    _, (circle, noir) = patches
    result = merge([circle, noir], tmp_path / "m.safetensors", kohya=True)
    assert result.kohya == tmp_path / "m.kohya.safetensors"
    assert read_patch(result.kohya).patch_id == read_patch(result.output).patch_id
    assert read_patch(result.kohya).manifest["format"]["keys"] == "kohya"
    twin = export(circle, "kohya", tmp_path / "circle.kohya.safetensors").output
    with pytest.raises(UsageError, match="given twice"):  # one patch in two layouts is still one patch
        merge([circle, twin], tmp_path / "twice.safetensors")
    assert not (tmp_path / "twice.safetensors").exists()


def test_merge_svd_reports_error_and_scores_are_marked_inherited(patches, tmp_path):
    _, (circle, noir) = patches
    for path in (circle, noir):  # give the parents M-Scores, as forget --score would
        parsed = read_patch(path)
        manifest = dict(parsed.manifest)
        manifest["concepts"] = [dict(c, mscore={"bench": "b", "definition": "mscore/1", "prompt": {"before": 1.0,
                                "after": 0.0}}) for c in manifest["concepts"]]  # fmt: skip
        write_patch(path, load_file(str(path)), manifest, family="sd1", rank=4, resolution=64, base_name="x")
    result = merge([circle, noir], tmp_path / "m.safetensors", method="svd", rank=4)
    assert result.rank == 4 and 0 < result.overall_error < 1
    assert all(0 <= e < 1 for e in result.module_errors.values())
    manifest = read_patch(result.output).manifest
    assert manifest["scores_inherited"] is True and manifest["concepts"][0]["mscore"]["prompt"]["after"] == 0.0


def test_merge_refuses_conflicts_before_writing(patches, tmp_path, tiny_models):
    _, (circle, noir) = patches
    to_square = _correction(noir, tmp_path / "sq.safetensors", "circle", "square")
    to_ring = _correction(circle, tmp_path / "ring.safetensors", "circle", "ring")
    with pytest.raises(ConflictError) as caught:
        merge([circle, to_square], tmp_path / "m.safetensors")
    assert {c.kind for c in caught.value.conflicts} == {"forget-vs-correct"}
    with pytest.raises(ConflictError, match="corrected to"):
        merge([to_square, to_ring], tmp_path / "m.safetensors")
    other = synthetic_patch(str(tiny_models["sd21"][0]), tmp_path / "o.safetensors", concept="x")
    with pytest.raises(ConflictError, match="different base"):
        merge([circle, other], tmp_path / "m.safetensors")
    with pytest.raises(ConflictError, match="opposite directions"):
        merge([circle, noir, _negated(circle, tmp_path)], tmp_path / "m.safetensors", strict=True)
    assert not (tmp_path / "m.safetensors").exists()
    warned = merge([circle, _negated(circle, tmp_path)], tmp_path / "m.safetensors")
    assert warned.warnings and all(not w.fatal for w in warned.warnings)


def _negated(patch: Path, tmp_path: Path) -> Path:
    from patchkit.core.patch_id import patch_id_of

    tensors = {k: (-v if ".lora_B." in k else v) for k, v in load_file(str(patch)).items()}
    manifest = dict(read_patch(patch).manifest, name="negated", patch_id=patch_id_of(tensors))
    out = tmp_path / "neg.safetensors"
    write_patch(out, tensors, manifest, family="sd1", rank=4, resolution=64, base_name="x")
    return out


def test_apply_of_a_stack_refuses_a_swapped_patch_even_before_the_output_is_pinned(patches, tmp_path):
    """`stack new` leaves the expected output null until a patch is added and planned; apply must
    still check every entry's pinned patch id, as `stack verify` does."""
    folder, (circle, noir) = patches
    stack_path = tmp_path / "s.stack.json"
    new_stack(str(folder), stack_path)
    add_patch(stack_path, circle)
    data = json.loads(stack_path.read_text())
    data["expected_output_fingerprint"] = None  # as if written by hand, or by an older stack add
    stack_path.write_text(json.dumps(data))
    circle.write_bytes(noir.read_bytes())  # another, valid patch under the pinned name
    sources, expected = sources_for([stack_path])
    assert expected is None and sources[0].pinned_id == data["patches"][0]["patch_id"]
    with pytest.raises(TrustError, match="not the patch its stack pins"):
        apply(str(folder), sources, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def closed_form_patches(tmp_path_factory) -> list[Path]:
    """Two real patchkit forgets of the testbed (closed form: seconds), which record their training prompts."""
    from patchkit.models.refs import ModelSource
    from patchkit.services.forget import forget
    from patchkit.services.forget_request import ForgetRequest
    from patchkit.training.prompts import Concept

    folder = tmp_path_factory.mktemp("fuse")
    made = []
    for name, category in (("circle", "object"), ("noir", "style")):
        request = ForgetRequest(ModelSource("testbed"), (Concept(name, category),), folder / f"no-{name}.safetensors",
                                method="closed-form")  # fmt: skip
        made.append(forget(request).output)
    return made


def test_merge_fuse_refits_jointly_and_reports_each_parents_drift(closed_form_patches, tmp_path):
    result = merge(closed_form_patches, tmp_path / "fused.safetensors", method="fuse", base="testbed")
    assert [d.patch for d in result.drifts] == ["forget-circle@1.0.0", "forget-noir@1.0.0"]
    for drift in result.drifts:  # the company moves each edit less once re-fitted
        assert drift.fused < drift.stacked
    manifest = read_patch(result.output).manifest
    ranks = sum(read_patch(p).manifest["format"]["rank"] for p in closed_form_patches)
    assert manifest["method"]["settings"]["method"] == "fuse" and manifest["format"]["rank"] == ranks  # exact
    assert len(manifest["method"]["settings"]["drift"]) == 2
    concat = merge(closed_form_patches, tmp_path / "concat.safetensors")
    fused, summed = patch_deltas(load_file(str(result.output))), patch_deltas(load_file(str(concat.output)))
    assert fused.keys() == summed.keys() and any(float(abs(fused[k] - summed[k]).max()) > 1e-4 for k in fused)


def test_merge_fuse_refuses_what_it_cannot_refit(closed_form_patches, patches, tiny_models, tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(UsageError, match="needs the base model"):
        merge(closed_form_patches, out, method="fuse")
    _, (other_base, _) = patches
    with pytest.raises(ConflictError, match="different base"):  # other shapes too: refused, not a crash
        merge([closed_form_patches[0], other_base], out, method="fuse", base="testbed")
    synthetic = synthetic_patch("testbed", tmp_path / "ring.safetensors", concept="ring", seed=3)
    with pytest.raises(UsageError, match="records no training prompts"):
        merge([closed_form_patches[0], synthetic], out, method="fuse", base="testbed")
    with pytest.raises(ModelMismatchError, match="was made for base"):
        merge(closed_form_patches, out, method="fuse", base=str(tiny_models["sd15"][0]))
    assert not out.exists()


def test_apply_warns_when_stacked_patches_move_each_others_edits(closed_form_patches, tmp_path):
    from patchkit.services.sources import PatchSource

    circle, noir = closed_form_patches
    quiet = apply("testbed", [PatchSource(circle), PatchSource(noir)], tmp_path / "a")
    assert quiet.interference == []  # closed-form pairs barely touch each other's targets (drift < 10%)
    loud = apply("testbed", [PatchSource(circle), PatchSource(noir, scale=5.0)], tmp_path / "b")
    assert len(loud.interference) == 1 and "forget-circle@1.0.0" in loud.interference[0]
    assert "--method fuse" in loud.interference[0] and "forget-noir" not in loud.interference[0].split("(")[1]
    assert (tmp_path / "b").is_dir()  # a warning, not a refusal


def test_apply_of_two_patches_lists_and_hashes_the_base_once(closed_form_patches, tmp_path, monkeypatch):
    """The interference check reuses the plan's spans and fingerprint (it used to describe the base again)."""
    from patchkit.models import weights
    from patchkit.services.sources import PatchSource

    calls = {"model_spans": 0, "leaves": 0}
    for name in calls:
        real = getattr(weights, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(weights, name, counted)
    circle, noir = closed_form_patches
    loud = apply("testbed", [PatchSource(circle), PatchSource(noir, scale=5.0)], tmp_path / "out")
    assert len(loud.interference) == 1  # the check ran, and measured
    assert calls == {"model_spans": 1, "leaves": 1}


def test_stack_add_warns_when_the_new_patch_moves_another_ones_edit(closed_form_patches, tmp_path):
    circle, noir = closed_form_patches
    stack = tmp_path / "release.stack.json"
    new_stack("testbed", stack)
    heard: list[str] = []
    add_patch(stack, circle, warn=heard.append)
    add_patch(stack, noir, warn=heard.append)
    assert heard == []  # closed-form pairs drift < 10%
    louder = tmp_path / "louder.stack.json"
    new_stack("testbed", louder)
    add_patch(louder, circle, warn=heard.append)
    add_patch(louder, noir, scale=5.0, warn=heard.append)
    assert len(heard) == 1 and "forget-circle@1.0.0" in heard[0] and "--method fuse" in heard[0]
    assert len(read_stack(louder).data["patches"]) == 2  # a warning, not a refusal


def test_stack_verify_reports_stacked_patches_that_move_each_others_edits(closed_form_patches, tmp_path):
    """A release stack is verified before it ships: the interference apply warns of is reported there too."""
    circle, noir = closed_form_patches
    quiet, loud = tmp_path / "quiet.stack.json", tmp_path / "loud.stack.json"
    for path, scale in ((quiet, 1.0), (loud, 5.0)):
        new_stack("testbed", path)
        add_patch(path, circle)
        add_patch(path, noir, scale=scale)
    assert verify_stack(quiet, "testbed").warnings == []
    result = verify_stack(loud, "testbed")
    assert result.ok and len(result.warnings) == 1 and "forget-circle@1.0.0" in result.warnings[0]
    assert result.to_json()["warnings"] == result.warnings
