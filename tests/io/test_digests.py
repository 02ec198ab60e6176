"""Tensor digests: parallel hashing, the stat-keyed cache, and fingerprints built from them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from patchkit.backend import pipeline
from patchkit.io.safetensors_io import read_header
from patchkit.io.tensor_spans import folder_spans
from patchkit.io.tensors_out import save_tensors
from patchkit.models import refs, weights
from tests.helpers import fingerprint


def test_span_fingerprint_equals_in_memory_fingerprint(tiny_models, tmp_path: Path) -> None:
    folder, _ = tiny_models["sd15"]
    ref = refs.resolve(str(folder))
    in_memory = fingerprint(pipeline.component_tensors(ref))
    assert weights.describe(ref).fingerprint == in_memory


def test_cache_is_used_and_invalidated_by_an_edit(tiny_models, tmp_path: Path) -> None:
    folder, _ = tiny_models["sd15"]
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    first = weights.describe(refs.resolve(str(copy))).fingerprint
    cached = list((tmp_path / "xdg-cache" / "patchkit" / "digests").glob("*.json"))
    assert len(cached) == 2  # unet and text encoder files
    assert weights.describe(refs.resolve(str(copy))).fingerprint == first

    unet_file = copy / "unet" / "diffusion_pytorch_model.safetensors"
    header = read_header(unet_file)
    key = sorted(header.tensors)[0]
    begin = header.data_start + header.tensors[key].begin
    stat = unet_file.stat()
    with open(unet_file, "r+b") as handle:  # flip one bit in place and keep the mtime: ctime still moves
        handle.seek(begin)
        byte = handle.read(1)
        handle.seek(begin)
        handle.write(bytes([byte[0] ^ 1]))
    os.utime(unet_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.describe(refs.resolve(str(copy))).fingerprint != first


def test_cache_off_still_hashes(tiny_models, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATCHKIT_NO_CACHE", "1")
    folder, _ = tiny_models["sd15"]
    a = weights.describe(refs.resolve(str(folder))).fingerprint
    assert not (tmp_path / "xdg-cache" / "patchkit" / "digests").exists()
    monkeypatch.delenv("PATCHKIT_NO_CACHE")
    assert weights.describe(refs.resolve(str(folder))).fingerprint == a


def test_folder_spans_cover_sharded_components(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    save_tensors(folder / "unet" / "diffusion_pytorch_model.safetensors", {"a": torch.ones(3), "b": torch.zeros(2)})
    spans = folder_spans(folder)
    assert sorted(spans["unet"]) == ["a", "b"]
    assert spans["unet"]["a"].nbytes == 12 and spans["unet"]["b"].dtype == "F32"


def _open_descriptors_under(folder: Path) -> list[str]:
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:  # the listing's own descriptor is gone by now
            continue
    return [t for t in targets if t.startswith(str(folder))]


def test_hashing_threads_leave_no_descriptor_open(tiny_models, tmp_path: Path) -> None:
    # a descriptor left open on a deleted checkpoint keeps its gigabytes on disk until exit
    folder, single = tiny_models["sd15"]
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    shutil.copy(single, tmp_path / "model.safetensors")
    for _ in range(5):
        weights.describe(refs.resolve(str(copy)))
        weights.describe(refs.resolve(str(tmp_path / "model.safetensors"), config=copy))
    assert _open_descriptors_under(tmp_path) == []


def test_span_reader_opens_each_file_once_under_racing_threads(tiny_models) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from patchkit.io.tensor_spans import SpanReader, header_spans

    unet_file = tiny_models["sd15"][0] / "unet" / "diffusion_pytorch_model.safetensors"
    spans = list(header_spans(unet_file, read_header(unet_file)).values())
    for _ in range(20):
        with SpanReader() as reader, ThreadPoolExecutor(8) as pool:
            list(pool.map(reader.raw, spans))
        assert _open_descriptors_under(unet_file.parent) == []


def test_a_cache_entry_of_the_wrong_shape_is_a_miss_not_a_crash(tmp_path):
    from patchkit.io.digests import DigestCache

    cache = DigestCache(tmp_path / "cache")
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"x")
    entry = cache._entry(target)  # where the cache keeps this file's digests
    assert entry is not None
    entry.parent.mkdir(parents=True, exist_ok=True)
    for damaged in ("[1]", "[" * 100_000 + "]" * 100_000, '{"version": null}'):
        entry.write_text(damaged)
        assert DigestCache(tmp_path / "cache").digests(target) == {}
