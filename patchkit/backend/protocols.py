"""The parts of a diffusers pipeline that patchkit's own loops touch, as Protocols.

diffusers and transformers are only partly typed, so code that takes "a pipeline" would
otherwise take `object` and silence the checker at every attribute. These Protocols name
exactly what the training loop and the testbed build use; any diffusers Stable Diffusion
pipeline (1.x, 2.x, XL) satisfies them, and importing this module imports neither library.
Attributes are read-only properties so that a concrete pipeline's narrower types fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class Tokenizer(Protocol):
    """A Hugging Face tokenizer: called on text, with its special token ids."""

    @property
    def bos_token_id(self) -> int: ...
    @property
    def eos_token_id(self) -> int: ...
    @property
    def pad_token_id(self) -> int: ...
    @property
    def model_max_length(self) -> int: ...

    # the result is a BatchEncoding (input_ids, attention_mask), untyped upstream
    def __call__(self, text: str | list[str], **kwargs: Any) -> Any: ...


class Scheduler(Protocol):
    @property
    def config(self) -> Any: ...  # num_train_timesteps, prediction_type, ...
    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor: ...


class Autoencoder(Protocol):
    # diffusers' FrozenDict config and the encoder output are untyped upstream
    @property
    def config(self) -> Any: ...
    def encode(self, images: torch.Tensor) -> Any: ...


class Pipeline(Protocol):
    """What the Forget-Me-Not loop reads from a Stable Diffusion pipeline."""

    @property
    def tokenizer(self) -> Tokenizer: ...
    @property
    def unet(self) -> Any: ...  # UNet2DConditionModel: called with keyword conditioning, config read
    @property
    def vae(self) -> Autoencoder: ...
    @property
    def scheduler(self) -> Scheduler: ...
    @property
    def vae_scale_factor(self) -> int: ...
