"""Work splitting under `accelerate launch`: each process takes every k-th job, results are gathered.

Outside `accelerate launch` this is a single process and costs nothing. We never start
processes ourselves: accelerate owns the launch (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) when not launched by accelerate."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def is_main_process() -> bool:
    return world()[0] == 0


def map_split(jobs: Sequence[T], work: Callable[[list[T]], list[R]]) -> list[R]:
    """`work` over `jobs`, split across processes; every process gets all results, in job order."""
    rank, size = world()
    if size == 1:
        return work(list(jobs))
    from accelerate.utils import gather_object

    mine = list(range(rank, len(jobs), size))
    results = work([jobs[i] for i in mine])
    gathered = gather_object([list(zip(mine, results, strict=True))])
    ordered: dict[int, R] = {}
    for part in gathered:
        for index, result in part:
            ordered[index] = result
    return [ordered[i] for i in range(len(jobs))]
