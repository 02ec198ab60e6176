import torch

from patchkit.core.fingerprint import canonical_key
from tests.helpers import fingerprint


def _model(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        "unet": {"conv_in.weight": torch.randn(4, 4, generator=g), "conv_in.bias": torch.randn(4, generator=g)},
        "text_encoder": {"embeddings.token_embedding.weight": torch.randn(8, 2, generator=g)},
    }


def test_fingerprint_is_sha256_hex_and_stable():
    first, second = fingerprint(_model()), fingerprint(_model())
    assert first == second
    assert len(first) == 64 and int(first, 16) >= 0


def test_fingerprint_ignores_key_order():
    model = _model()
    reordered = {c: dict(reversed(list(t.items()))) for c, t in reversed(list(model.items()))}
    assert fingerprint(reordered) == fingerprint(model)


def test_fingerprint_changes_with_one_value():
    model = _model()
    model["unet"]["conv_in.bias"][2] += 1e-3
    assert fingerprint(model) != fingerprint(_model())


def test_fingerprint_changes_with_dtype_and_shape():
    base = fingerprint(_model())
    half = _model()
    half["unet"]["conv_in.weight"] = half["unet"]["conv_in.weight"].half().float()
    as_fp16 = _model()
    as_fp16["unet"]["conv_in.weight"] = as_fp16["unet"]["conv_in.weight"].half()
    assert fingerprint(as_fp16) != fingerprint(half)
    reshaped = _model()
    reshaped["unet"]["conv_in.weight"] = reshaped["unet"]["conv_in.weight"].reshape(2, 8)
    assert fingerprint(reshaped) != base


def test_vae_and_position_ids_are_not_hashed():
    model = _model()
    with_extras = _model()
    with_extras["vae"] = {"decoder.conv_out.weight": torch.ones(3)}
    with_extras["text_encoder"]["embeddings.position_ids"] = torch.arange(8)
    assert fingerprint(with_extras) == fingerprint(model)


def test_text_encoder_keys_with_and_without_text_model_prefix_agree():
    flat = _model()
    prefixed = _model()
    prefixed["text_encoder"] = {"text_model." + k: v for k, v in prefixed["text_encoder"].items()}
    assert fingerprint(flat) == fingerprint(prefixed)
    assert canonical_key("text_encoder_2", "text_projection.weight") == "text_projection.weight"
    assert canonical_key("unet", "conv_in.weight") == "conv_in.weight"
