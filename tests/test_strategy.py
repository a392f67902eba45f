"""Server side: sampling, FedAvg aggregation, FedFomo's model store and P updates."""

from __future__ import annotations

import numpy as np
import pytest

from fedfomo.messages import Upload, decode_ids, encode_floats, encode_ids, split_models, unpack_request
from fedfomo.methods.fedfomo import FedFomoStrategy
from fedfomo.results import RunRecorder
from fedfomo.strategy import sample_clients, weighted_average


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


def _up(cid, weights, ids, raw):
    return Upload(cid=cid, weights=weights, num_examples=10, metrics={"candidate_ids": ids, "weights": raw})


def _strategy(tmp_path, n=4, m=3):
    init = [np.zeros(2), np.zeros(1)]
    return FedFomoStrategy(num_models=m, epsilon=0.0, epsilon_decay=0.0, num_clients=n, num_rounds=5,
                           participation=1.0, seed=0, initial_weights=init,
                           recorder=RunRecorder(tmp_path, 5, workers=1, progress=False))


def test_fedfomo_store_and_affinity(tmp_path):
    st = _strategy(tmp_path)
    # round 1: nothing uploaded yet -> the initial model, no candidates
    w, cfg = st.download(0, 1)
    assert cfg["candidate_ids"] == "" and len(w) == 2
    uploads = {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))], "", "") for c in range(4)}
    st.aggregate(1, uploads)
    assert sorted(st.store) == [0, 1, 2, 3]
    np.testing.assert_array_equal(st.affinity, np.eye(4))
    # round 2: client 0 reports weights for candidates [0, 2, 3]
    st.aggregate(2, {0: _up(0, uploads[0].weights, encode_ids([0, 2, 3]), encode_floats(np.array([0.1, 0.7, -0.2])))})
    np.testing.assert_allclose(st.affinity[0], [1.1, 0.0, 0.7, -0.2])
    # round 3 (eps=0): own first, then by affinity: 2, then 1 (0.0) before 3 (-0.2)
    w, cfg = st.download(0, 3)
    assert decode_ids(cfg["candidate_ids"]) == [0, 2, 1]
    models = split_models(w, 2)
    assert [float(m[1][0]) for m in models] == [0.0, 2.0, 1.0]


def test_fedfomo_affinity_saved_each_round(tmp_path):
    st = _strategy(tmp_path)
    st.after_round(1)
    np.testing.assert_array_equal(np.load(tmp_path / "affinity" / "round_001.npy"), np.eye(4))


@pytest.fixture
def server_identity():
    """Messages are stamped with the run and node of the ServerApp process; fake both outside Flower."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1


def test_train_messages_go_to_the_node_serving_each_partition(tmp_path, server_identity):
    st = _strategy(tmp_path)
    st.nodes = {0: 900, 1: 901, 2: 902, 3: 903}
    msgs = list(st.train_messages(1))
    assert [m.metadata.dst_node_id for m in msgs] == [900, 901, 902, 903]
    assert all(m.metadata.message_type == "train" for m in msgs)
    weights, config = unpack_request(msgs[0])
    assert config == {"server_round": 1, "candidate_ids": ""}
    assert len(weights) == 2 and all(np.array_equal(a, b) for a, b in zip(weights, st.global_weights))
    ev = list(st.evaluate_messages([2]))
    assert ev[0].metadata.dst_node_id == 902 and unpack_request(ev[0])[1]["server_round"] == 6


def test_fedfomo_partial_participation_store_and_candidates(tmp_path):
    st = _strategy(tmp_path, n=6, m=3)

    def up(c, r):
        return [np.full(2, 10.0 * r + c), np.full(1, 10.0 * r + c)]
    # round 1: only clients 0, 1, 2 take part
    st.aggregate(1, {c: _up(c, up(c, 1), "", "") for c in (0, 1, 2)})
    assert st.affinity.shape == (6, 6) and sorted(st.store) == [0, 1, 2]
    # a client that never uploaded gets M others, all from the uploaded ones
    _, cfg = st.download(4, 2)
    assert sorted(decode_ids(cfg["candidate_ids"])) == [0, 1, 2]
    # round 2: only client 0 uploads; the absent clients' latest uploads stay in the store
    st.aggregate(2, {0: _up(0, up(0, 2), encode_ids([0, 2]), encode_floats(np.array([0.0, 0.5])))})
    assert float(st.store[0][0][0]) == 20.0 and float(st.store[1][0][0]) == 11.0
    np.testing.assert_allclose(st.affinity[0], [1.0, 0.0, 0.5, 0.0, 0.0, 0.0])
    w, cfg = st.download(1, 3)
    ids = decode_ids(cfg["candidate_ids"])
    assert ids[0] == 1 and set(ids) <= {0, 1, 2} and len(ids) == 3
    assert float(split_models(w, 2)[0][1][0]) == 11.0  # its own latest upload, from round 1
