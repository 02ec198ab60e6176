import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from patchkit.errors import CorruptFileError, InputError, PickleRefusedError
from patchkit.io.safetensors_io import LazyTensors, looks_like_pickle, read_header


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file(
        {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16)}, str(path), metadata={"k": "v"}
    )
    return path


def test_reads_header_and_metadata(good):
    header = read_header(good)
    assert set(header.tensors) == {"a", "b"}
    assert header.metadata == {"k": "v"}
    assert header.tensors["a"].shape == (2, 3)


def test_truncated_file_names_the_shortfall(good, tmp_path):
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-5])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_header(cut)


def test_header_length_past_end_of_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CorruptFileError, match="exceeds the file size"):
        read_header(path)


def test_garbage_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    body = b"not json at all!"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        read_header(path)


def test_bad_offsets(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(CorruptFileError, match="data_offsets"):
        read_header(path)


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(CorruptFileError, match="too short"):
        read_header(path)


def test_pickle_named_safetensors_is_refused(tmp_path):
    path = tmp_path / "sneaky.safetensors"
    torch.save({"a": torch.ones(2)}, path)  # a zip archive, whatever its name says
    assert looks_like_pickle(path)
    with pytest.raises(PickleRefusedError, match="pickle"):
        read_header(path)


def test_raw_pickle_is_detected(tmp_path):
    path = tmp_path / "raw.safetensors"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4) + b"\0" * 64)
    with pytest.raises(PickleRefusedError):
        read_header(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_header(tmp_path / "nope.safetensors")


def test_lazy_tensors_loads_on_demand(good):
    tensors = LazyTensors(good)
    assert sorted(tensors) == ["a", "b"]
    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3))
    with pytest.raises(KeyError):
        tensors["c"]


def _file(tmp_path, header_text: str, data: bytes):
    raw = header_text.encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


F32 = '"dtype":"F32","shape":[1]'


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        # what the reference parser refuses, each of which lets two readers see different data
        ('{"a":{' + F32 + ',"data_offsets":[0,4]},"b":{' + F32 + ',"data_offsets":[2,6]}}', b"\0" * 6, "overlaps"),
        ('{"a":{' + F32 + ',"data_offsets":[0,4]},"b":{' + F32 + ',"data_offsets":[8,12]}}', b"\0" * 12,
         "belong to none"),
        ('{"a":{' + F32 + ',"data_offsets":[0,4]}}', b"\0" * 8, "after the last tensor"),
        ('{"__metadata__":{"m":"one"},"__metadata__":{"m":"two"},"a":{' + F32 + ',"data_offsets":[0,4]}}',
         b"\0" * 4, "twice"),
        ('{"a":{' + F32 + ',"data_offsets":[0,4]},"a":{' + F32 + ',"data_offsets":[0,4]}}', b"\0" * 4, "twice"),
        ('{"__metadata__":{"m":1},"a":{' + F32 + ',"data_offsets":[0,4]}}', b"\0" * 4, "map of strings"),
        ("[" * 100_000 + "]" * 100_000, b"", "nested too deeply"),
    ],
)  # fmt: skip
def test_refuses_what_the_reference_parser_refuses(tmp_path, header, data, needle):
    with pytest.raises(CorruptFileError, match=needle):
        read_header(_file(tmp_path, header, data))
