import json
import struct

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from patchkit.io.tensors_out import header_bytes, save_tensors, serialize


def test_exact_header_bytes():
    tensors = {"b": torch.zeros(2, dtype=torch.float16), "a": torch.ones(1, 2)}
    raw = header_bytes(tensors, {"z": "1", "k": "v"})
    (length,) = struct.unpack("<Q", raw[:8])
    assert length % 8 == 0 and len(raw) == 8 + length
    expected = (
        '{"__metadata__":{"k":"v","z":"1"},'
        '"a":{"data_offsets":[0,8],"dtype":"F32","shape":[1,2]},'
        '"b":{"data_offsets":[8,12],"dtype":"F16","shape":[2]}}'
    )
    assert raw[8:].decode().rstrip(" ") == expected


def test_round_trip_through_the_safetensors_reader(tmp_path):
    tensors = {"w": torch.randn(3, 4), "i": torch.arange(5), "h": torch.randn(2).to(torch.bfloat16)}
    path = tmp_path / "t.safetensors"
    save_tensors(path, tensors, {"k": "v"})
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"k": "v"}
    assert path.read_bytes() == serialize(tensors, {"k": "v"})


def test_bytes_do_not_depend_on_insertion_order():
    a = serialize({"x": torch.ones(2), "y": torch.zeros(3)}, {"m": "1", "n": "2"})
    b = serialize({"y": torch.zeros(3), "x": torch.ones(2)}, {"n": "2", "m": "1"})
    assert a == b
    assert json.loads(a[8 : 8 + struct.unpack("<Q", a[:8])[0]])["x"]["data_offsets"] == [0, 8]
