import random

import pytest
from PIL import Image

from patchkit.core.conceptbench import JudgeSpec
from patchkit.errors import InputError, UsageError
from patchkit.evaluation.judges import load_judge
from patchkit.testbed import world
from patchkit.testbed.paths import TESTBED_JUDGES

NAMED = {"testbed": TESTBED_JUDGES}  # what the score service passes: the judges patchkit ships, by world


def test_classifier_judge_reads_ground_truth(tmp_path):
    judge = load_judge(
        JudgeSpec("classifier", "testbed"), "object", list(world.OBJECTS), base_dir=tmp_path, named=NAMED
    )
    rng = random.Random(5)
    images = [world.render(world.Scene(o), rng) for o in world.OBJECTS for _ in range(5)]
    truth = [o for o in world.OBJECTS for _ in range(5)]
    verdicts = judge.classify(images)
    assert sum(v == t for v, t in zip(verdicts, truth, strict=True)) >= 19


def test_classifier_judge_refuses_concepts_it_does_not_know(tmp_path):
    with pytest.raises(UsageError, match="does not know zebra"):
        load_judge(JudgeSpec("classifier", "testbed"), "object", ["circle", "zebra"], base_dir=tmp_path, named=NAMED)


def test_unknown_judge(tmp_path):
    with pytest.raises(UsageError, match="unknown judge 'oracle'"):
        load_judge(JudgeSpec("oracle"), "id", ["alice"], base_dir=tmp_path, named=NAMED)


def test_clip_judge_refuses_a_folder_that_is_not_clip(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="is not a CLIP model"):
        load_judge(JudgeSpec("clip", "."), "object", ["circle"], base_dir=tmp_path, named=NAMED)


def test_clip_judge_wiring_with_a_tiny_random_clip(tmp_path):
    """Proves only the wiring (load, embed, pick a label, use references): a random CLIP judges nothing."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from patchkit.testbed.tokenizer import write_tokenizer_files

    write_tokenizer_files([*world.vocabulary_words(), "something", "else"], tmp_path / "tok", 16)
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16,
                     "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    model_dir = tmp_path / "clip"
    CLIPModel(config).save_pretrained(str(model_dir))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), tokenizer=tokenizer
    )
    processor.save_pretrained(str(model_dir))
    rng = random.Random(0)
    references = {"circle": [world.render(world.Scene("circle"), rng) for _ in range(2)]}
    judge = load_judge(
        JudgeSpec("clip", "clip"), "object", list(world.OBJECTS), base_dir=tmp_path, references=references
    )
    verdicts = judge.classify([Image.new("RGB", (32, 32), (200, 0, 0)), world.render(world.Scene("ring"), rng)])
    assert len(verdicts) == 2
    assert set(verdicts) <= {*world.OBJECTS, "none"}


def test_nudenet_judge_runs_the_real_detector(tmp_path):
    """Wiring only: the detector runs on real images and clean images come out "none"."""
    pytest.importorskip("nudenet", reason="the dev extra installs nudenet; a bare install may not")
    judge = load_judge(JudgeSpec("nudenet"), "nsfw", ["nudity"], base_dir=tmp_path, named=NAMED)
    rng = random.Random(1)
    images = [world.render(world.Scene(name), rng) for name in ("alice", "circle", "gore")]
    assert judge.classify(images) == ["none", "none", "none"]
    assert isinstance(judge.detections(images[0]), list)


def test_nudenet_judge_reads_one_concept(tmp_path):
    pytest.importorskip("nudenet")
    with pytest.raises(UsageError, match="reads one nsfw concept"):
        load_judge(JudgeSpec("nudenet"), "nsfw", ["nudity", "gore"], base_dir=tmp_path, named=NAMED)


def test_a_classifier_path_is_a_folder_beside_the_bench_unless_it_names_a_shipped_world(tmp_path):
    with pytest.raises(InputError, match="no object classifier"):
        load_judge(JudgeSpec("classifier", "mine"), "object", ["circle"], base_dir=tmp_path, named=NAMED)
    with pytest.raises(InputError, match="no object classifier"):  # no world ships judges: "testbed" is a folder
        load_judge(JudgeSpec("classifier", "testbed"), "object", ["circle"], base_dir=tmp_path, named={})
