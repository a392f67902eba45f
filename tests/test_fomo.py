"""The FedFomo math against hand-computed values, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfomo import fomo


def test_epsilon_schedule_linear_and_clipped():
    assert fomo.epsilon_at(0.3, 0.05, 1) == pytest.approx(0.3)
    assert fomo.epsilon_at(0.3, 0.05, 2) == pytest.approx(0.25)
    assert fomo.epsilon_at(0.3, 0.05, 6) == pytest.approx(0.05)
    assert fomo.epsilon_at(0.3, 0.05, 7) == pytest.approx(0.0, abs=1e-12)
    assert fomo.epsilon_at(0.3, 0.05, 20) == 0.0
    assert fomo.epsilon_at(0.3, 0.0, 50) == pytest.approx(0.3)


def test_distances_by_hand():
    a = [np.array([1.0, 2.0]), np.array([[0.0, 3.0]])]
    b = [np.array([0.0, 0.0]), np.array([[4.0, -1.0]])]
    # differences: 1, 2, -4, 4
    assert fomo.parameter_distance(a, b, "l1") == pytest.approx(11.0)
    assert fomo.parameter_distance(a, b, "l2") == pytest.approx(np.sqrt(1 + 4 + 16 + 16))
    with pytest.raises(ValueError, match=r"fomo\.distance"):
        fomo.parameter_distance(a, b, "linf")


def test_weights_eq3_by_hand():
    # baseline loss 2.0; candidate losses 1.0, 2.5, 1.5; distances 4, 1, 0.5
    w = fomo.fomo_weights(2.0, [1.0, 2.5, 1.5], [4.0, 1.0, 0.5])
    np.testing.assert_allclose(w, [0.25, -0.5, 1.0])


def test_weights_guard_identical_model():
    w = fomo.fomo_weights(1.0, [1.0], [0.0])
    assert np.isfinite(w).all() and w[0] == 0.0
    # a zero distance with a lower loss: the guard makes the weight (1.0 - 0.5) / 1e-12, not inf
    w = fomo.fomo_weights(1.0, [0.5], [0.0])
    assert w[0] == pytest.approx(0.5 / fomo.DENOMINATOR_GUARD)


def test_weights_of_diverged_candidates_are_zero():
    # nan and inf validation losses (diverged models) get weight 0; the finite one keeps Eq. 3's
    w = fomo.fomo_weights(2.0, [np.nan, np.inf, 1.0], [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(w, [0.0, 0.0, 0.5])
    # a weight that overflows to inf is dropped too
    w = fomo.fomo_weights(1e308, [-1e308], [1e-300])
    np.testing.assert_array_equal(w, [0.0])


def test_merge_eq13_by_hand():
    base = [np.array([0.0, 0.0]), np.array([1.0])]
    c1 = [np.array([2.0, 0.0]), np.array([3.0])]
    c2 = [np.array([0.0, 4.0]), np.array([-1.0])]
    c3 = [np.array([100.0, 100.0]), np.array([100.0])]  # negative weight: ignored
    merged, reverted = fomo.fomo_merge(base, [c1, c2, c3], np.array([0.3, 0.1, -5.0]))
    # w* = (0.75, 0.25, 0); theta = base + 0.75 (c1 - base) + 0.25 (c2 - base)
    assert not reverted
    np.testing.assert_allclose(merged[0], [1.5, 1.0])
    np.testing.assert_allclose(merged[1], [1.0 + 0.75 * 2.0 + 0.25 * -2.0])


def test_revert_to_baseline_when_no_positive_weight():
    base = [np.array([1.0, -1.0])]
    cands = [[np.array([5.0, 5.0])], [np.array([-3.0, 2.0])]]
    merged, reverted = fomo.fomo_merge(base, cands, np.array([-0.1, 0.0]))
    assert reverted
    np.testing.assert_array_equal(merged[0], base[0])
    assert merged[0] is not base[0]


def test_affinity_update_raw_signed():
    p = np.eye(3)
    q = fomo.update_affinity(p, 1, [1, 0, 2], np.array([0.5, -0.25, 2.0]))
    np.testing.assert_allclose(q, [[1, 0, 0], [-0.25, 1.5, 2.0], [0, 0, 1]])
    np.testing.assert_array_equal(p, np.eye(3))  # pure


def test_selection_greedy_with_eps0():
    p_row = np.array([9.0, 0.1, 0.7, 0.5, 0.9, -1.0])
    ids = fomo.select_candidates(p_row, own=0, available=range(6), num_models=4, epsilon=0.0,
                                 rng=np.random.default_rng(0))
    assert ids == [0, 4, 2, 3]


def test_selection_only_uploaded_models():
    p_row = np.array([0.0, 5.0, 4.0, 3.0])
    ids = fomo.select_candidates(p_row, own=0, available=[0, 2, 3], num_models=3, epsilon=0.0,
                                 rng=np.random.default_rng(0))
    assert ids == [0, 2, 3]
    # own model not uploaded yet: M others
    ids = fomo.select_candidates(p_row, own=0, available=[1, 2, 3], num_models=2, epsilon=0.0,
                                 rng=np.random.default_rng(0))
    assert ids == [1, 2]


def test_selection_eps1_is_uniform_random():
    p_row = np.array([1.0, 100.0, 0.0, 0.0, 0.0])
    counts = np.zeros(5)
    rng = np.random.default_rng(1)
    for _ in range(4000):
        ids = fomo.select_candidates(p_row, own=0, available=range(5), num_models=2, epsilon=1.0, rng=rng)
        assert ids[0] == 0
        counts[ids[1]] += 1
    # the best-affinity model (1) is not favoured: each other is picked ~1/4 of the time
    np.testing.assert_allclose(counts[1:] / 4000, 0.25, atol=0.03)


def test_selection_explores_per_slot():
    # own 0, others 1-4 with affinity 4 > 3 > 2 > 1, M=3, epsilon=0.5: each of the two slots is
    # greedy with probability 0.5 and uniform over the models still unchosen otherwise, so
    # P([0, 1, 2]) = (0.5 + 0.5/4) * (0.5 + 0.5/3) = 5/12 (exploring per client instead of per
    # slot would give 0.5 + 0.5 * (1/4 * 1/3) = 13/24)
    p_row = np.array([0.0, 4.0, 3.0, 2.0, 1.0])
    rng = np.random.default_rng(3)
    draws = 8000
    hits = sum(fomo.select_candidates(p_row, 0, range(5), 3, 0.5, rng) == [0, 1, 2] for _ in range(draws))
    assert hits / draws == pytest.approx(5 / 12, abs=0.025)


def test_selection_ties_broken_at_random():
    p_row = np.array([1.0, 0.0, 0.0, 0.0])
    picks = {fomo.select_candidates(p_row, 0, range(4), 2, 0.0, np.random.default_rng(s))[1] for s in range(50)}
    assert picks == {1, 2, 3}


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    eps=st.floats(0, 1),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_selection_properties(n, m, eps, seed, data):
    own = data.draw(st.integers(0, n - 1))
    available = sorted(data.draw(st.sets(st.integers(0, n - 1))))
    p_row = np.asarray(data.draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n)))
    ids = fomo.select_candidates(p_row, own, available, m, eps, np.random.default_rng(seed))
    assert len(ids) == len(set(ids)) == min(m, len(available))
    assert set(ids) <= set(available)
    if own in available:
        assert ids[0] == own
    if eps == 0.0:  # greedy: the others in non-increasing affinity, none left out that beats one taken
        others = [j for j in ids if j != own]
        scores = [p_row[j] for j in others]
        assert scores == sorted(scores, reverse=True)
        left = [p_row[j] for j in available if j != own and j not in ids]
        if others and left:
            assert max(left) <= min(scores)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.floats(-10, 10), min_size=1, max_size=6),
    seed=st.integers(0, 1000),
)
def test_merge_is_convex_combination(raw, seed):
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=4)]
    cands = [[rng.normal(size=4)] for _ in raw]
    merged, reverted = fomo.fomo_merge(base, cands, np.array(raw))
    pos = np.maximum(np.array(raw), 0.0)  # Eq. 13's normalisation, written out here
    w = pos / pos.sum() if pos.sum() > 0 else None
    assert reverted == (w is None)
    if w is None:
        np.testing.assert_array_equal(merged[0], base[0])
    else:
        assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
        # theta = sum_n w_n theta_n: a convex combination of the positively weighted candidates
        np.testing.assert_allclose(merged[0], sum(wn * c[0] for wn, c in zip(w, cands)), atol=1e-9)
