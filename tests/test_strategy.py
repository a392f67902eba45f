"""Server side: sampling, FedAvg aggregation, FedFomo's model store and P updates."""

from __future__ import annotations

import numpy as np
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from fedfomo.messages import decode_ids, encode_floats, encode_ids, split_models
from fedfomo.results import RunRecorder
from fedfomo.strategy import FedFomoStrategy, sample_clients, weighted_average


def test_sampling_fraction_seeded():
    assert sample_clients(15, 1.0, 3, 0) == list(range(15))
    s = sample_clients(100, 0.1, 4, 0)
    assert len(s) == 10 and s == sample_clients(100, 0.1, 4, 0) and s != sample_clients(100, 0.1, 5, 0)
    assert len(sample_clients(5, 0.01, 1, 0)) == 1


def test_weighted_average():
    a = [np.array([0.0, 2.0], dtype=np.float32)]
    b = [np.array([4.0, 2.0], dtype=np.float32)]
    out = weighted_average([(a, 1), (b, 3)])
    np.testing.assert_allclose(out[0], [3.0, 2.0])
    assert out[0].dtype == np.float32


def _strategy(tmp_path, n=4, m=3):
    init = [np.zeros(2), np.zeros(1)]
    return FedFomoStrategy(num_models=m, epsilon=0.0, epsilon_decay=0.0, num_clients=n, num_rounds=5,
                           participation=1.0, seed=0, initial_weights=init,
                           recorder=RunRecorder(tmp_path, 5, workers=1, progress=False))


def test_fedfomo_store_and_affinity(tmp_path):
    st = _strategy(tmp_path)
    params = ndarrays_to_parameters(st.initial_weights)
    # round 1: nothing uploaded yet -> the initial model, no candidates
    w, cfg = st.download(0, 1, params)
    assert cfg["candidate_ids"] == "" and len(w) == 2
    uploads = {c: ([np.full(2, float(c)), np.full(1, float(c))], 10, {"candidate_ids": "", "weights": ""})
               for c in range(4)}
    st.aggregate(1, uploads)
    assert sorted(st.store) == [0, 1, 2, 3]
    np.testing.assert_array_equal(st.affinity, np.eye(4))
    # round 2: client 0 reports weights for candidates [0, 2, 3]
    st.aggregate(2, {0: (uploads[0][0], 10, {"candidate_ids": encode_ids([0, 2, 3]),
                                             "weights": encode_floats(np.array([0.1, 0.7, -0.2]))})})
    np.testing.assert_allclose(st.affinity[0], [1.1, 0.0, 0.7, -0.2])
    # round 3 (eps=0): own first, then by affinity: 2, then 1 (0.0) before 3 (-0.2)
    w, cfg = st.download(0, 3, params)
    assert decode_ids(cfg["candidate_ids"]) == [0, 2, 1]
    models = split_models(w, 2)
    assert [float(m[1][0]) for m in models] == [0.0, 2.0, 1.0]


def test_fedfomo_affinity_saved_each_round(tmp_path):
    st = _strategy(tmp_path)
    st.after_round(1)
    np.testing.assert_array_equal(np.load(tmp_path / "affinity" / "round_001.npy"), np.eye(4))


def test_initial_parameters(tmp_path):
    st = _strategy(tmp_path)
    out = parameters_to_ndarrays(st.initialize_parameters(None))
    assert len(out) == 2 and all(np.array_equal(a, b) for a, b in zip(out, st.initial_weights))


def test_fedfomo_partial_participation_store_and_candidates(tmp_path):
    st = _strategy(tmp_path, n=6, m=3)
    params = ndarrays_to_parameters(st.initial_weights)

    def up(c, r):
        return [np.full(2, 10.0 * r + c), np.full(1, 10.0 * r + c)]
    # round 1: only clients 0, 1, 2 take part
    st.aggregate(1, {c: (up(c, 1), 10, {"candidate_ids": "", "weights": ""}) for c in (0, 1, 2)})
    assert st.affinity.shape == (6, 6) and sorted(st.store) == [0, 1, 2]
    # a client that never uploaded gets M others, all from the uploaded ones
    _, cfg = st.download(4, 2, params)
    assert sorted(decode_ids(cfg["candidate_ids"])) == [0, 1, 2]
    # round 2: only client 0 uploads; the absent clients' latest uploads stay in the store
    st.aggregate(2, {0: (up(0, 2), 10, {"candidate_ids": encode_ids([0, 2]),
                                        "weights": encode_floats(np.array([0.0, 0.5]))})})
    assert float(st.store[0][0][0]) == 20.0 and float(st.store[1][0][0]) == 11.0
    np.testing.assert_allclose(st.affinity[0], [1.0, 0.0, 0.5, 0.0, 0.0, 0.0])
    w, cfg = st.download(1, 3, params)
    ids = decode_ids(cfg["candidate_ids"])
    assert ids[0] == 1 and set(ids) <= {0, 1, 2} and len(ids) == 3
    assert float(split_models(w, 2)[0][1][0]) == 11.0  # its own latest upload, from round 1
