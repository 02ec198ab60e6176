"""The torch-free tensor codec that apply fuses through must give torch's bits exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchkit.io.arrays import bfloat16_bits, from_float32, read_float32, to_float32
from patchkit.io.tensors_out import save_tensors


def _awkward_floats() -> np.ndarray:
    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.integers(-40, 38, 20_000)
    values = (rng.standard_normal(20_000) * scales).astype(np.float32)
    # exact bf16 ties (the low 16 bits 0x8000), both parities, and the special values
    ties = (np.arange(1000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-45, 1.17549435e-38], np.float32)
    return np.concatenate([values, ties, special])


def test_bfloat16_rounding_matches_torch_bit_for_bit():
    values = _awkward_floats()
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bfloat16_bits(values), expected)


@pytest.mark.parametrize(("name", "dtype"), [("F16", torch.float16), ("BF16", torch.bfloat16), ("F32", torch.float32)])
def test_round_trip_through_the_stored_type_matches_torch(name, dtype):
    values = _awkward_floats()
    values = values[np.isfinite(values)]
    tensor = torch.from_numpy(values).to(dtype)
    raw = tensor.view(torch.uint8).numpy().tobytes()
    assert np.array_equal(to_float32(raw, name, values.shape), tensor.float().numpy())
    cast = from_float32(values, name)
    assert cast.tobytes() == raw


def test_read_float32_reads_a_safetensors_file_without_torch_types(tmp_path):
    tensors = {"a": torch.randn(3, 4).to(torch.bfloat16), "b": torch.randn(2).half()}
    save_tensors(tmp_path / "t.safetensors", tensors)
    read = read_float32(tmp_path / "t.safetensors")
    assert read.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert read[key].dtype == np.float32 and np.array_equal(read[key], tensor.float().numpy())


def test_integer_tensors_are_not_floats(tmp_path):
    with pytest.raises(ValueError, match="not a float type"):
        to_float32(b"\0" * 8, "I64", (1,))
