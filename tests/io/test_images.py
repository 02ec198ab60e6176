"""Reading a folder of reference images that a user (or a bench file) named: hostile until checked."""

from __future__ import annotations

import os
import threading

import pytest
from PIL import Image

from patchkit.core.conceptbench import BenchConcept
from patchkit.errors import InputError
from patchkit.io.images import MAX_IMAGE_BYTES, load_image_folder
from patchkit.services.score import reference_images


def _folder(tmp_path, count: int = 2):
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / f"{i}.png")
    return folder


def test_images_are_read_sorted_as_rgb(tmp_path):
    images = load_image_folder(_folder(tmp_path, 3))
    assert [im.getpixel((0, 0))[0] for im in images] == [0, 40, 80] and all(im.mode == "RGB" for im in images)


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(tmp_path):
    folder = _folder(tmp_path)
    os.mkfifo(folder / "2.png")
    done: list[BaseException] = []

    def read() -> None:
        try:
            load_image_folder(folder)
        except InputError as error:
            done.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # unblock the thread before failing, so the run does not hang
        with open(folder / "2.png", "wb"):
            pass
        pytest.fail("load_image_folder blocked on a FIFO")
    assert done and "FIFO" in done[0].message


def test_a_corrupt_or_oversized_image_is_one_input_error(tmp_path):
    folder = _folder(tmp_path)
    (folder / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(InputError, match="not a readable image"):
        load_image_folder(folder)
    with open(folder / "2.png", "wb") as handle:
        handle.truncate(MAX_IMAGE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(InputError, match="over the"):
        load_image_folder(folder)


def test_score_reads_a_bench_s_references_with_the_same_checks(tmp_path):
    folder = _folder(tmp_path)
    concept = BenchConcept(
        name="circle", category="object", prompts=("a circle",), images_per_prompt=1, seed=0, reference_images="refs"
    )
    assert len(reference_images(concept, tmp_path)) == 2
    (folder / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not images"):  # used to be skipped silently
        reference_images(concept, tmp_path)
    gone = BenchConcept(name="c", category="object", prompts=("c",), images_per_prompt=1, seed=0,
                        reference_images="gone")  # fmt: skip
    with pytest.raises(InputError, match="no such folder"):
        reference_images(gone, tmp_path)
