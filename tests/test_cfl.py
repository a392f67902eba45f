"""Clustered FL (Sattler et al. 2020): split criterion, bi-partition and within-cluster averaging."""

from __future__ import annotations

import numpy as np
import pytest

from fedfomo.config import ConfigError, validate_config
from fedfomo.messages import Upload
from fedfomo.methods.cfl import CFLStrategy, bipartition, cosine_similarities, should_split
from fedfomo.results import RunRecorder
from tests.test_methods import _cfg


def test_split_criterion_on_constructed_updates():
    # two groups pulling in opposite directions: the mean update is small, the individual ones are not
    updates = np.array([[2.0, 0.0], [2.0, 0.2], [-2.0, 0.0], [-2.0, -0.2]])
    split, mean_norm, max_norm = should_split(updates, eps1=0.4, eps2=1.6)
    assert split and mean_norm == pytest.approx(0.0) and max_norm == pytest.approx(np.hypot(2.0, 0.2))
    # everyone agrees: the mean update is large -> no split
    assert not should_split(np.array([[2.0, 0.0], [2.1, 0.0]]), 0.4, 1.6)[0]
    # converged individually too: the largest update is small -> no split
    assert not should_split(np.array([[0.1, 0.0], [-0.1, 0.0]]), 0.4, 1.6)[0]


def test_bipartition_paper_rule_and_authors_complete_linkage_disagree():
    x = np.array([0.0, 1.0, 2.0, 3.5])  # METHOD_NOTES: similarity = -|x_i - x_j|
    s = -np.abs(x[:, None] - x[None, :])
    assert bipartition(s, "single") == ([0, 1, 2], [3])  # min-max: the largest gap (1.5) separates
    assert bipartition(s, "complete") == ([0, 1], [2, 3])


def test_bipartition_of_cosine_similarities_separates_opposite_updates():
    updates = np.array([[1.0, 0.1], [-1.0, 0.0], [0.9, 0.0], [-1.0, -0.2], [1.0, -0.1]])
    s = cosine_similarities(updates)
    np.testing.assert_allclose(np.diag(s), 1.0)
    assert bipartition(s, "single") == ([0, 2, 4], [1, 3])


def _strategy(tmp_path, **kw):
    init = [np.zeros(2, dtype=np.float32)]
    opts = dict(eps1=0.4, eps2=1.6, min_round=1, min_cluster_size=3, linkage="single", weighted=False)
    opts.update(kw)
    return CFLStrategy(num_clients=4, num_rounds=3, participation=1.0, seed=0, initial_weights=init,
                       recorder=RunRecorder(tmp_path, 3, 1, progress=False), **opts)


def _up(cid, vec, n=10):
    return Upload(cid, [np.array(vec, dtype=np.float32)], n, {})


def test_cluster_splits_and_each_part_moves_by_its_mean_update(tmp_path):
    st = _strategy(tmp_path)
    uploads = {0: _up(0, [2.0, 0.0]), 1: _up(1, [2.0, 0.2]), 2: _up(2, [-2.0, 0.0]), 3: _up(3, [-2.0, -0.2])}
    st.aggregate(1, uploads)
    assert st.clusters == [[0, 1], [2, 3]]
    np.testing.assert_allclose(st.models[0][0], [2.0, 0.1])
    np.testing.assert_allclose(st.models[1][0], [-2.0, -0.1])
    w, extra = st.download(3, 2)
    np.testing.assert_allclose(w[0], [-2.0, -0.1])
    assert extra == {"cluster": 1}
    st.after_round(1)
    assert (tmp_path / "clusters.json").read_text() == '{"1": [[0, 1], [2, 3]]}'


def test_no_split_before_min_round_or_in_small_clusters_and_weighted_mean(tmp_path):
    uploads = {0: _up(0, [2.0, 0.0], 10), 1: _up(1, [2.0, 0.2], 30), 2: _up(2, [-2.0, 0.0]), 3: _up(3, [-2.0, -0.2])}
    st = _strategy(tmp_path, min_round=2)
    st.aggregate(1, uploads)
    assert st.clusters == [[0, 1, 2, 3]]
    np.testing.assert_allclose(st.models[0][0], [0.0, 0.0], atol=1e-7)
    st = _strategy(tmp_path, min_cluster_size=5)
    st.aggregate(1, uploads)
    assert st.clusters == [[0, 1, 2, 3]]
    st = _strategy(tmp_path, eps1=0.0, weighted=True)  # no split; mean weighted by train size 10, 30, 10, 10
    st.aggregate(1, uploads)
    np.testing.assert_allclose(st.models[0][0], [(20 + 60 - 20 - 20) / 60, (6 - 2) / 60], rtol=1e-6)


def test_bad_settings_are_one_line():
    validate_config(_cfg("method=cfl"))
    with pytest.raises(ConfigError, match=r"method.eps2=0.1 must be larger than method.eps1=0.2"):
        validate_config(_cfg("method=cfl", "method.eps2=0.1"))
    with pytest.raises(ConfigError, match=r"method.linkage='ward' is not supported; allowed: single, complete"):
        validate_config(_cfg("method=cfl", "method.linkage=ward"))
    with pytest.raises(ConfigError, match=r"method.min_cluster_size=1 is out of range; allowed: >= 2"):
        validate_config(_cfg("method=cfl", "method.min_cluster_size=1"))
