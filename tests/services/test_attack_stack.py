"""`attack --stack` and the patches it loads: scales, pinned ids, and the base each patch was made for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from patchkit.backend import conditioning, pipeline
from patchkit.backend.lora import load_patches
from patchkit.cli.app import app
from patchkit.models import refs, weights
from patchkit.models.refs import ModelSource
from patchkit.services.attack import AttackBudget, AttackRequest, attack
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.forget import ForgetRequest, forget
from patchkit.services.stack import add_patch, new_stack
from patchkit.training.prompts import Concept

runner = CliRunner()
BUDGET = AttackBudget(images_per_prompt=1, compositions=3)


@pytest.fixture(scope="module")
def two_patches(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("attack-stack")
    made = []
    for name, category in (("circle", "object"), ("noir", "style")):
        out = folder / f"no-{name}.safetensors"
        forget(ForgetRequest(ModelSource("testbed"), [Concept(name, category)], out, method="closed-form"))
        made.append(out)
    return made[0], made[1]


def _keys(pipe) -> torch.Tensor:
    """The first cross-attention key projection's output for a circle prompt: linear in the patch's scale."""
    to_k = next(m for name, m in pipe.unet.named_modules() if name.endswith("attn2.to_k"))
    with torch.no_grad():
        return to_k(conditioning.encode(pipe, ["a photo of a circle"]).states)


def test_patches_load_at_their_scales(two_patches):
    circle, _ = two_patches
    keys = {}
    for scale in (0.0, 0.5, 1.0):
        pipe = pipeline.load_pipeline(refs.resolve("testbed"))
        load_patches(pipe, [circle], [scale])
        keys[scale] = _keys(pipe)
    plain = _keys(pipeline.load_pipeline(refs.resolve("testbed")))
    assert torch.allclose(keys[0.0], plain, atol=1e-6)
    assert (keys[1.0] - plain).abs().max() > 1e-2
    assert torch.allclose(keys[0.5], (keys[0.0] + keys[1.0]) / 2, atol=1e-5)


def _verdicts(report: dict) -> list[tuple[str, str, list[dict]]]:
    """What each attack's images were judged, without the timings."""
    return [(c["concept"], a["attack"], a["prompts"]) for c in report["concepts"] for a in c["attacks"]]


def test_a_stack_is_attacked_as_its_patches_loaded_together(two_patches, tmp_path):
    circle, noir = two_patches
    stack = tmp_path / "release.stack.json"
    new_stack("testbed", stack)
    for patch in (circle, noir):
        add_patch(stack, patch)
    request = AttackRequest(("circle", "noir"), attacks=("composition",), budget=BUDGET)
    stacked, loose, unpatched = (
        attack(ModelSource("testbed"), request, **how).to_json()
        for how in ({"stacks": [stack]}, {"patches": [circle, noir]}, {})
    )
    assert _verdicts(stacked) == _verdicts(loose) != _verdicts(unpatched)
    assert [Path(p).name for p in stacked["patches"]] == [circle.name, noir.name]


def test_refused_before_any_work_wrong_base_unpinned_patch_and_a_stack_by_another_name(
    two_patches, tiny_models, tmp_path
):
    circle, noir = two_patches
    out = tmp_path / "report"
    base = ["attack", "testbed", "-c", "circle", "-a", "composition", "--images-per-prompt", "1", "-o", str(out)]

    foreign = synthetic_patch(str(tiny_models["sd15"][0]), tmp_path / "other.safetensors", concept="circle")
    testbed = weights.describe(refs.resolve("testbed")).fingerprint
    result = runner.invoke(app, [*base, "-p", str(foreign)])
    assert result.exit_code == 5, result.output
    assert "was made for base" in result.output and testbed in result.output

    stack = tmp_path / "release.stack.json"
    new_stack("testbed", stack)
    local = tmp_path / "no-circle.safetensors"
    shutil.copy(circle, local)
    add_patch(stack, local)
    shutil.copy(noir, local)  # the file the stack names is now another patch
    result = runner.invoke(app, [*base, "--stack", str(stack)])
    assert result.exit_code == 7, result.output
    assert "is not the patch its stack pins" in result.output

    renamed = tmp_path / "release.json"
    shutil.copy(stack, renamed)
    result = runner.invoke(app, [*base, "--stack", str(renamed)])
    assert result.exit_code == 2 and "ends in .stack.json" in result.output
    assert not out.exists()
