"""patchkit's own single-file key mapping agrees with diffusers' converters, tensor for tensor."""

from __future__ import annotations

import pytest

from patchkit.io import pipeline_folder as pf
from patchkit.io.safetensors_io import read_header
from patchkit.io.tensor_spans import single_file_spans
from patchkit.models import refs
from tests.backend.diffusers_spans import single_file_spans as diffusers_spans


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_inverse_layout_matches_diffusers_converters(tiny_models, name):
    folder, single = tiny_models[name]
    configs = {c: pf.component_config(folder, c) for c in pf.present_components(folder)}
    header = read_header(single)
    family = refs.family_of(configs["unet"])
    ours = single_file_spans(single, header, configs, family)
    theirs = diffusers_spans(single, header, configs, family)
    assert set(ours) == set(theirs)
    for component in theirs:
        assert ours[component] == theirs[component], component
