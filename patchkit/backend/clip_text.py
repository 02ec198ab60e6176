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

from collections.abc import Callable, Mapping, Sequence
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
    """States of a CLIP text encoder: after the final layer norm, or the second-to-last layer's.

    `tensors` maps the canonical names to tensors, and may read them lazily (a checkpoint's
    byte spans): the forward runs layer by layer over every prompt it is given and asks for
    each layer's weights once, so a streamed encoder holds one layer, never the model
    (SDXL's two encoders are 1.6 GB in fp16, 3.3 GB in float32).
    """

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
            names += _layer_keys(i)
        return [*names, *_FINAL_NORM]

    def get_input_embeddings(self) -> _Embeddings:
        """The token embedding table (what neighbour search compares)."""
        return _Embeddings(self._t["text_model.embeddings.token_embedding.weight"].float())

    def _weights(self, names: list[str]) -> dict[str, torch.Tensor]:
        # read once per layer and widened there: the maths is float32 throughout, whatever the
        # checkpoint's dtype, and only this layer's float32 copy is held
        return {name: self._t[name].float() for name in names}

    def _layer(self, shared: torch.Tensor, rest: torch.Tensor, i: int,
               w: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Layer i on a chunk: `shared` (1, P, width) is the prefix every row of `rest` (rows, S,
        width) continues, computed once; each row's positions attend to it and causally to their own."""
        base = f"text_model.encoder.layers.{i}."
        width, heads = self.config.hidden_size, self.config.heads

        def norm(t: torch.Tensor, name: str) -> torch.Tensor:
            return F.layer_norm(t, (width,), w[base + name + ".weight"], w[base + name + ".bias"], self.config.eps)

        def linear(t: torch.Tensor, name: str) -> torch.Tensor:
            return F.linear(t, w[base + name + ".weight"], w[base + name + ".bias"])

        def heads_of(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
            h = norm(t, "layer_norm1")
            return tuple(linear(h, f"self_attn.{p}_proj").unflatten(-1, (heads, width // heads)).transpose(1, 2)
                         for p in ("q", "k", "v"))  # fmt: skip

        def finish(t: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
            t = t + linear(attended.transpose(1, 2).flatten(2), "self_attn.out_proj")
            return t + linear(self._act(linear(norm(t, "layer_norm2"), "mlp.fc1")), "mlp.fc2")

        q, k, v = heads_of(rest)
        prefix = shared.shape[1]
        if prefix == 0:
            return shared, finish(rest, F.scaled_dot_product_attention(q, k, v, is_causal=True))
        qp, kp, vp = heads_of(shared)
        rows, length = rest.shape[0], rest.shape[1]
        keys = torch.cat([kp.expand(rows, -1, -1, -1), k], dim=2)
        values = torch.cat([vp.expand(rows, -1, -1, -1), v], dim=2)
        sees = torch.ones(length, prefix + length, dtype=torch.bool)
        sees[:, prefix:] = torch.ones(length, length, dtype=torch.bool).tril()
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=sees)
        return finish(shared, F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)), finish(rest, attended)

    def states(
        self, ids: torch.Tensor, *, penultimate: bool = False, lengths: Sequence[int] | None = None
    ) -> torch.Tensor:
        """(prompts, length, width): the final layer norm's output, or (SDXL) the second-to-last layer's.

        Layer-major: every prompt passes layer i before any reaches layer i + 1, so each
        layer's weights are read once per call; the caller bounds how many prompts one call
        holds. Rows run in chunks (`_chunks`) in token order, and the tokens a chunk's rows
        all begin with are computed once for the chunk (the encoder is causal, so a shared
        prefix has one set of states: "a photo of a" before every word of a template). With
        `lengths` (one per prompt) a chunk runs only to its longest prompt's length; a row's
        positions past its length are left uncomputed. All of it is exact.
        """
        rows, context = ids.shape
        reach_of = [context] * rows if lengths is None else [max(1, min(context, n)) for n in lengths]
        table = self._t["text_model.embeddings.token_embedding.weight"]
        with torch.no_grad():
            x = table[ids].float() + self._t["text_model.embeddings.position_embedding.weight"][:context].float()
            chunks = []
            for members in _chunks(ids, reach_of):
                reach = max(reach_of[r] for r in members)
                prefix = min(_shared_prefix(ids[members]), reach - 1)
                chunks.append((members, prefix, reach, x[members[:1], :prefix], x[members, prefix:reach]))
            last = self.config.layers - 1 if penultimate else self.config.layers
            for i in range(last):
                w = self._weights(_layer_keys(i))
                chunks = [(m, p, n, *self._layer(shared, rest, i, w)) for m, p, n, shared, rest in chunks]
                del w
            for members, prefix, reach, shared, rest in chunks:
                x[members, :prefix] = shared.expand(len(members), -1, -1)
                x[members, prefix:reach] = rest
            if penultimate:
                return x
            w = self._weights(_FINAL_NORM)
            width = (self.config.hidden_size,)
            return F.layer_norm(x, width, w[_FINAL_NORM[0]], w[_FINAL_NORM[1]], self.config.eps)


def _chunks(ids: torch.Tensor, reach_of: list[int]) -> list[list[int]]:
    """The rows in runs that share a prefix: sorted by length, then by tokens, so each template's
    prompts run together; a run ends where its shared prefix would shrink or its length grow (once it has
    `_MIN_CHUNK_TOKENS` of work: bigger matrix products run faster) or its work would pass
    `_CHUNK_TOKENS` (the activations' bound)."""
    order = sorted(range(ids.shape[0]), key=lambda r: (reach_of[r], ids[r].tolist()))
    chunks: list[list[int]] = []
    prefix = reach = 0
    for row in order:
        if chunks:
            members = chunks[-1]
            grown = max(reach, reach_of[row])
            shared = min(_shared_prefix(ids[[members[0], row]]), grown - 1)  # the run's prefix is the least
            work = len(members) * (reach - prefix)
            if (len(members) + 1) * (grown - min(prefix, shared)) <= _CHUNK_TOKENS and (
                (shared >= prefix and grown == reach) or work < _MIN_CHUNK_TOKENS
            ):
                members.append(row)
                prefix, reach = min(prefix, shared), grown
                continue
        chunks.append([row])
        prefix, reach = reach_of[row] - 1, reach_of[row]
    return chunks


def _shared_prefix(rows: torch.Tensor) -> int:
    """How many leading tokens every row shares (rows sorted by length first need not be in token order)."""
    differ = (rows != rows[:1]).any(0).nonzero()
    return int(differ[0]) if len(differ) else int(rows.shape[1])


_CHUNK_TOKENS = 8192  # positions through one layer at once: bounds the MLP's activations (SDXL: 8192 x 5120 floats)
_MIN_CHUNK_TOKENS = 512
_FINAL_NORM = ["text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"]
_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
          "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2")  # fmt: skip


def _layer_keys(i: int) -> list[str]:
    return [f"text_model.encoder.layers.{i}.{part}.{kind}" for part in _PARTS for kind in ("weight", "bias")]
