import copy
import json

import pytest

from patchkit.core.conceptbench import BenchError, parse_bench
from patchkit.testbed.conceptbench_build import build_testbed_bench
from patchkit.testbed.paths import TESTBED_BENCH


def test_shipped_bench_matches_the_world():
    assert json.loads(TESTBED_BENCH.read_text()) == build_testbed_bench()


def test_shipped_reference_images_are_the_generated_ones():
    import numpy as np
    from PIL import Image

    from patchkit.testbed import world
    from patchkit.testbed.conceptbench_build import reference_folder, reference_images
    from patchkit.testbed.paths import TESTBED_ROOT

    for name, category in world.all_concepts():
        files = sorted((TESTBED_ROOT / reference_folder(name)).glob("*.png"))
        expected = reference_images(name, category)
        assert len(files) == len(expected) == 8
        for file, image in zip(files, expected, strict=True):
            assert np.array_equal(np.asarray(Image.open(file).convert("RGB")), np.asarray(image)), file


def test_shipped_bench_parses_with_32_images_per_concept():
    bench = parse_bench(build_testbed_bench())
    assert len(bench.concepts) == 13
    assert all(len(c.jobs()) == 32 for c in bench.concepts)
    seeds = [s for c in bench.concepts for _, s in c.jobs()]
    assert len(seeds) == len(set(seeds)), "no two bench images share a seed"


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d["concepts"][2].update(images_per_prompt=0), "$.concepts[2].images_per_prompt"),
        (lambda d: d["concepts"][0].update(category="celebrity"), "$.concepts[0].category"),
        (lambda d: d["sampler"].pop("steps"), "$.sampler"),
        (lambda d: d.update(mscore="mscore/9"), "$.mscore"),
        (lambda d: d["judges"].update(weather={"name": "clip"}), "$.judges"),
    ],
)
def test_schema_failures_name_the_path(edit, path):
    data = copy.deepcopy(build_testbed_bench())
    edit(data)
    with pytest.raises(BenchError) as caught:
        parse_bench(data, "bench.json")
    assert f"bench.json: {path}" in caught.value.message


def test_category_without_judge():
    data = copy.deepcopy(build_testbed_bench())
    del data["judges"]["nsfw"]
    with pytest.raises(BenchError, match="'nsfw' has concepts but no judge"):
        parse_bench(data)


def test_duplicate_concept():
    data = copy.deepcopy(build_testbed_bench())
    data["concepts"].append(copy.deepcopy(data["concepts"][0]))
    with pytest.raises(BenchError, match="listed twice"):
        parse_bench(data)
