"""Which world a model belongs to: registered worlds by model source, the generic world otherwise."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from patchkit.core.world import GENERIC_WORLD, World
from patchkit.models.refs import ModelRef
from patchkit.testbed.testbed_world import testbed_world

_REGISTERED: dict[str, Callable[[], World]] = {}


def register(source: str, factory: Callable[[], World]) -> None:
    """Make `factory`'s world the one for every model resolved with this source."""
    _REGISTERED[source] = cache(factory)


register("testbed", testbed_world)


def world_for(ref: ModelRef) -> World:
    factory = _REGISTERED.get(ref.source)
    return factory() if factory else GENERIC_WORLD


def judge_folders() -> dict[str, Path]:
    """Each registered world's classifier judges by world name: what a bench's judge `path` may name."""
    worlds = (factory() for factory in _REGISTERED.values())
    return {w.name: w.judges for w in worlds if w.judges is not None}
