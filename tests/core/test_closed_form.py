"""The closed-form solve and its rank cut, on small random tensors whose right answers are known."""

from __future__ import annotations

import pytest
import torch

from patchkit.core.closed_form import Grams, Regulariser, low_rank_deltas, state_map
from patchkit.training.closed_form import aligned_position


class _States:
    def __init__(self, edited: int, held: int, width: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.sources = torch.randn(edited, width, generator=generator)
        self.targets = torch.randn(edited, width, generator=generator)
        self.preserved = torch.randn(held, width, generator=generator)
        self.grams = Grams(width)
        # in two batches: the sums must not depend on how the states arrive
        for part in (slice(0, edited // 2), slice(edited // 2, edited)):
            self.grams.add_edits(self.sources[part], self.targets[part])
        self.grams.add_held(self.preserved)


def _states(edited: int, held: int) -> _States:
    return _States(edited, held)


def test_edited_states_read_as_their_targets_and_held_states_stay():
    states = _states(edited=4, held=8)
    weight = torch.randn(12, 16, generator=torch.Generator().manual_seed(1)).double()
    g = state_map(states.grams, Regulariser(preserve_weight=1.0, ridge=1e-9))
    edited = weight + weight @ g
    # 4 + 8 states in 16 dimensions: both conditions can hold exactly
    assert torch.allclose(edited @ states.sources.double().T, weight @ states.targets.double().T, atol=1e-5)
    assert torch.allclose(edited @ states.preserved.double().T, weight @ states.preserved.double().T, atol=1e-5)


def test_preserve_weight_trades_the_edit_against_what_is_held():
    states = _states(edited=12, held=12)  # 24 states in 16 dimensions: no exact answer
    weight = torch.eye(16, dtype=torch.float64)

    def errors(preserve: float) -> tuple[float, float]:
        g = state_map(states.grams, Regulariser(preserve_weight=preserve, ridge=1e-6))
        edited = weight + weight @ g
        moved = float((edited @ states.sources.double().T - states.targets.double().T).norm())
        kept = float((edited @ states.preserved.double().T - states.preserved.double().T).norm())
        return moved, kept

    loose, tight = errors(0.1), errors(10.0)
    assert tight[1] < loose[1] and tight[0] > loose[0]


def test_ridge_shrinks_the_edit():
    states = _states(edited=4, held=4)
    small = state_map(states.grams, Regulariser(preserve_weight=1.0, ridge=1e-6)).norm()
    large = state_map(states.grams, Regulariser(preserve_weight=1.0, ridge=10.0)).norm()
    assert large < small / 2


def test_rank_cut_is_exact_at_full_rank_and_optimal_below():
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(20, 16, generator=generator)
    low = torch.randn(16, 3, generator=generator).double() @ torch.randn(3, 16, generator=generator).double()
    exact = low_rank_deltas([("a.attn2.to_k", weight)], low, rank=3)
    a, b = exact.tensors["unet.a.attn2.to_k.lora_A.weight"], exact.tensors["unet.a.attn2.to_k.lora_B.weight"]
    assert a.shape == (3, 16) and b.shape == (20, 3) and a.dtype == torch.float32
    assert exact.error < 1e-6
    assert torch.allclose((b @ a).double(), weight.double() @ low, atol=1e-4)
    full = torch.randn(16, 16, generator=generator).double()
    cut = low_rank_deltas([("m", weight)], full, rank=4)
    sigma = torch.linalg.svdvals(weight.double() @ full)
    best = float((sigma[4:].pow(2).sum() / sigma.pow(2).sum()).sqrt())  # Eckart-Young
    assert cut.error == pytest.approx(best, rel=1e-3)


def test_rank_cut_gives_the_same_bytes_twice():
    generator = torch.Generator().manual_seed(3)
    weight, g = torch.randn(24, 16, generator=generator), torch.randn(16, 16, generator=generator).double()
    first = low_rank_deltas([("m", weight)], g, rank=4).tensors
    second = low_rank_deltas([("m", weight)], g, rank=4).tensors
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    ("position", "concept", "anchor_span", "expected"),
    [
        (1, [3], [], 1),  # before the concept: itself
        (3, [3], [], 3),  # a forget: the concept reads as what now follows the prefix
        (0, [0], [], 0),
        (4, [3], [], 3),  # after it: the anchor's state one place earlier
        (5, [3, 4], [], 3),  # a two-token concept shifts what follows by two
        (4, [3, 4], [3], 3),  # a correction: the target's tokens, the last one repeated
        (6, [3], [3, 4], 7),  # a longer target shifts what follows the other way
        (15, [3], [3, 4], 15),  # never past the context
    ],
)
def test_aligned_position(position, concept, anchor_span, expected):
    assert aligned_position(position, concept, anchor_span, 16) == expected


def test_adversarial_states_are_read_by_the_edited_projections_as_the_originals():
    from patchkit.core.closed_form import adversarial_states

    generator = torch.Generator().manual_seed(3)
    g = 0.3 * torch.randn(6, 6, generator=generator, dtype=torch.float64)
    originals = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    found = adversarial_states(originals, g, damping=1e-9)
    weight = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    edited = weight + weight @ g  # W' = W (I + G)
    torch.testing.assert_close(found @ edited.T, originals @ weight.T, rtol=1e-6, atol=1e-6)
    damped = adversarial_states(originals, g, damping=10.0)
    assert damped.norm() < found.norm()  # damping keeps the attack's states small
