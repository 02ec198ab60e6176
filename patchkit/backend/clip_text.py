"""The CLIP text encoder's forward pass in plain torch, for the closed form's states.

Why not transformers' CLIPTextModel: importing its modelling stack took 8.1 s of a
10.75 s closed-form forget on 2 cores (measured; the solve itself is 0.08 s), so the
whole command missed its 10 s bar on import time alone. The forward is small (token and
position embeddings, pre-norm causal self-attention and MLP layers, a final layer norm),
and tests/services/test_closed_form_forget.py holds it equal to what diffusers' pipelines
feed the UNet for SD 1.x, 2.x and XL. Weights are the checkpoint's own tensors under
their canonical `text_model.*` names; nothing else of the model is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from patchkit.errors import ModelMismatchError

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP (SD 1.x, SDXL's first encoder)
    "gelu": F.gelu,  # OpenCLIP (SD 2.x, SDXL's second encoder)
}


@dataclass(frozen=True)
class _Embeddings:
    weight: torch.Tensor


@dataclass(frozen=True)
class ClipTextConfig:
    hidden_size: int
    heads: int
    layers: int
    activation: str
    eps: float

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> ClipTextConfig:
        activation = str(config.get("hidden_act", "quick_gelu"))
        if activation not in _ACTIVATIONS:
            raise ModelMismatchError(f"text encoder activation {activation!r} is not CLIP's",
                                     hint="patchkit reads SD 1.x, 2.x and XL text encoders")  # fmt: skip
        return cls(int(config["hidden_size"]), int(config["num_attention_heads"]), int(config["num_hidden_layers"]),
                   activation, float(config.get("layer_norm_eps", 1e-5)))  # fmt: skip


class ClipTextEncoder:
    """States of a CLIP text encoder: after the final layer norm, or the second-to-last layer's."""

    def __init__(self, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        self.config = ClipTextConfig.of(config)
        self._t = tensors
        self._act = _ACTIVATIONS[self.config.activation]

    @staticmethod
    def keys(config: Mapping[str, Any]) -> list[str]:
        """The canonical tensor names the forward reads."""
        c = ClipTextConfig.of(config)
        names = ["text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"]
        for i in range(c.layers):
            base = f"text_model.encoder.layers.{i}."
            for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                         "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):  # fmt: skip
                names += [base + part + ".weight", base + part + ".bias"]
        return [*names, "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"]

    def get_input_embeddings(self) -> _Embeddings:
        """The token embedding table (what neighbour search compares)."""
        return _Embeddings(self._t["text_model.embeddings.token_embedding.weight"].float())

    def _w(self, name: str) -> torch.Tensor:
        # weights stay in the checkpoint's dtype (SDXL's two encoders are 1.6 GB in fp16, 3.3 GB
        # in float32) and are widened one layer at a time: the maths is float32 throughout
        return self._t[name].float()

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        width = (self.config.hidden_size,)
        return F.layer_norm(x, width, self._w(name + ".weight"), self._w(name + ".bias"), self.config.eps)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._w(name + ".weight"), self._w(name + ".bias"))

    def _layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        base = f"text_model.encoder.layers.{i}."
        batch, length, width = x.shape
        heads = self.config.heads
        h = self._norm(x, base + "layer_norm1")

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, heads, width // heads).transpose(1, 2)

        q, k, v = (split(self._linear(h, base + f"self_attn.{p}_proj")) for p in ("q", "k", "v"))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self._linear(attended.transpose(1, 2).reshape(batch, length, width), base + "self_attn.out_proj")
        h = self._norm(x, base + "layer_norm2")
        return x + self._linear(self._act(self._linear(h, base + "mlp.fc1")), base + "mlp.fc2")

    def states(self, ids: torch.Tensor, *, penultimate: bool = False) -> torch.Tensor:
        """(prompts, length, width): the final layer norm's output, or (SDXL) the second-to-last layer's."""
        positions = torch.arange(ids.shape[1])
        x = self._t["text_model.embeddings.token_embedding.weight"][ids].float()
        x = x + self._t["text_model.embeddings.position_embedding.weight"][positions].float()
        last = self.config.layers - 1 if penultimate else self.config.layers
        with torch.no_grad():
            for i in range(last):
                x = self._layer(x, i)
            return x if penultimate else self._norm(x, "text_model.final_layer_norm")
