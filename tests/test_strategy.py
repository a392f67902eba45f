"""Server side: sampling, FedAvg aggregation, FedFomo's model store and P updates."""

from __future__ import annotations

from types import SimpleNamespace

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


def test_fixed_sampling_takes_the_same_clients_every_round_as_the_authors_code():
    fixed = [sample_clients(100, 0.1, r, 3, "fixed") for r in range(1, 6)]
    assert all(f == fixed[0] for f in fixed) and len(fixed[0]) == 10
    assert fixed[0] != sample_clients(100, 0.1, 1, 4, "fixed")  # still seeded by the run's seed
    assert len({tuple(sample_clients(100, 0.1, r, 3)) for r in range(1, 6)}) == 5  # fresh: a new draw per round
    assert sample_clients(15, 1.0, 2, 0, "fixed") == list(range(15))
    with pytest.raises(ValueError, match="allowed values are fresh, fixed"):
        sample_clients(100, 0.1, 1, 0, "random")


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


# -- issue 12: windowed sending, dispatch order, incremental store checkpoints ---------------------
class _FakeGrid:
    """A grid that answers every pushed message after ``delay`` polls and tracks messages in flight."""

    def __init__(self, delay: int = 2):
        self.delay, self.in_flight, self.max_in_flight, self.pushed = delay, {}, 0, []

    def push_messages(self, messages):
        ids = []
        for m in messages:
            mid = f"m{len(self.pushed)}"
            self.pushed.append(m)
            self.in_flight[mid] = self.delay
            ids.append(mid)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        return ids

    def pull_messages(self, ids):
        out = []
        for mid in list(ids):
            if mid in self.in_flight:
                self.in_flight[mid] -= 1
                if self.in_flight[mid] <= 0:
                    del self.in_flight[mid]
                    out.append(SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid)))
        return out


def test_send_windowed_keeps_at_most_window_in_flight_and_returns_every_reply():
    from fedfomo.server import send_windowed

    taken = []

    def messages():
        for k in range(10):
            taken.append(k)
            yield k

    grid = _FakeGrid()
    replies = send_windowed(grid, messages(), window=3, timeout=10, where="round 1", poll_s=0)
    assert len(replies) == 10 and grid.pushed == list(range(10)) and grid.max_in_flight == 3


def test_send_windowed_timeout_is_one_line_naming_the_setting():
    from fedfomo.server import send_windowed

    grid = _FakeGrid(delay=10**9)
    with pytest.raises(RuntimeError) as err:
        send_windowed(grid, iter(range(5)), window=2, timeout=0.05, where="round 4", poll_s=0.01)
    assert str(err.value) == "round 4: 5 of 5 clients did not reply within 0 s (sim.round_timeout_s)"


def test_dispatch_order_is_largest_first_and_changes_no_download(tmp_path, server_identity):
    def run(work):
        st = _strategy(tmp_path / str(bool(work)), n=6, m=3)
        st.epsilon = 0.9  # exploration draws from the round's one random stream
        st.nodes = {c: 900 + c for c in range(6)}
        st.work = work
        st.aggregate(1, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))], "", "") for c in range(6)})
        msgs = list(st.train_messages(2))
        return [int(m.metadata.dst_node_id) - 900 for m in msgs], {
            int(m.metadata.dst_node_id) - 900: unpack_request(m)[1]["candidate_ids"] for m in msgs}

    order_plain, ids_plain = run({})
    order_work, ids_work = run({0: 5, 1: 50, 2: 7, 3: 50, 4: 1, 5: 9})
    assert order_plain == [0, 1, 2, 3, 4, 5] and order_work == [1, 3, 5, 2, 0, 4]
    assert ids_plain == ids_work


def test_store_checkpoint_writes_each_upload_once_and_drops_replaced_ones(tmp_path):
    from fedfomo import checkpoint

    st = _strategy(tmp_path, n=3, m=2)
    st.aggregate(1, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))], "", "") for c in range(3)})
    checkpoint.save_server(tmp_path, 1, *st.checkpoint_state(), blobs=st.checkpoint_blobs())
    blobs = tmp_path / "checkpoint" / "blobs"
    assert sorted(p.name for p in blobs.iterdir()) == ["store_0_r0001.npys", "store_1_r0001.npys", "store_2_r0001.npys"]
    kept = (blobs / "store_0_r0001.npys").stat().st_mtime_ns
    st.aggregate(2, {1: _up(1, [np.full(2, 7.0), np.full(1, 7.0)], "", "")})
    checkpoint.save_server(tmp_path, 2, *st.checkpoint_state(), blobs=st.checkpoint_blobs())
    assert sorted(p.name for p in blobs.iterdir() if p.is_file()) == ["store_0_r0001.npys", "store_1_r0002.npys",
                                                                      "store_2_r0001.npys"]
    assert [p.name for p in (blobs / checkpoint.SPARE).iterdir()] == ["store_1_r0001.npys"]  # dropped, for reuse
    assert (blobs / "store_0_r0001.npys").stat().st_mtime_ns == kept  # not written again
    fresh = _strategy(tmp_path / "other", n=3, m=2)
    rnd, arrays, meta = checkpoint.load_server(tmp_path)
    fresh.restore_state(arrays, meta)
    assert rnd == 2 and fresh.store_round == {0: 1, 1: 2, 2: 1}
    for c in range(3):
        for a, b in zip(fresh.store[c], st.store[c]):
            np.testing.assert_array_equal(a, b)


def test_read_blob_returns_exactly_what_was_saved(tmp_path):
    from fedfomo import checkpoint
    from fedfomo.checkpoint import pack, read_blob, write_blob

    saved = [np.arange(12, dtype=np.float32).reshape(3, 4), np.asfortranarray(np.random.default_rng(0).random((5, 3))),
             np.array(3, dtype=np.int64), np.zeros((0, 4), dtype=np.float32), np.array([True, False])]
    path = write_blob(tmp_path, "x", saved)
    assert path == tmp_path / "checkpoint" / "blobs" / "x.npys"
    legacy = write_blob(tmp_path / "old", "x", [])
    legacy.unlink()
    np.savez(legacy.with_suffix(".npz"), **pack("w", saved))  # a blob of a version before .npys: still read
    assert checkpoint.blob_path(tmp_path / "old", "x") == legacy.with_suffix(".npz")
    for got in (read_blob(path), read_blob(legacy.with_suffix(".npz"))):
        assert len(got) == len(saved)
        for a, b in zip(saved, got):
            assert a.dtype == b.dtype and a.shape == b.shape and b.flags.writeable and b.flags.aligned
            assert a.flags.f_contiguous == b.flags.f_contiguous
            np.testing.assert_array_equal(a, b)
    write_blob(tmp_path, "x", [np.ones(1)])  # a blob's name names its content: never rewritten
    np.testing.assert_array_equal(read_blob(path)[0], saved[0])


@pytest.mark.parametrize("extra", ["none", "global"])
def test_shared_store_sends_references_to_the_same_models(tmp_path, server_identity, extra):
    from fedfomo import checkpoint
    from fedfomo.methods.fedfomo import shared_candidates

    def strategy(shared):
        st = FedFomoStrategy(num_models=2, epsilon=0.5, epsilon_decay=1.0, num_clients=4, num_rounds=5,
                             participation=1.0, seed=0, initial_weights=[np.zeros(2), np.zeros(1)],
                             recorder=RunRecorder(tmp_path / str(shared), 5, workers=1, progress=False),
                             extra_candidates=extra, num_subfederations=2)
        st.shared_store, st.nodes = shared, {c: 900 + c for c in range(4)}
        st.run_info = {"run_dir": str(tmp_path / str(shared))}
        st.work = {c: 10 for c in range(4)}
        st.aggregate(1, {c: _up(c, [np.full(2, c + 0.5), np.full(1, -c - 0.25)], "", "") for c in range(4)})
        return st

    plain, shared = strategy(False), strategy(True)
    checkpoint.save_server(tmp_path / "True", 1, *shared.checkpoint_state(), blobs=shared.checkpoint_blobs())
    for a, b in zip(plain.train_messages(2), shared.train_messages(2)):
        (wa, ca), (wb, cb) = unpack_request(a), unpack_request(b)
        ids = decode_ids(cb["candidate_ids"])
        assert ca["candidate_ids"] == cb["candidate_ids"] and decode_ids(cb["candidate_rounds"]) == [1, 1]
        assert "candidate_rounds" not in ca and len(wb) == len(wa) - 2 * 2  # the two stored models stay on disk
        got = shared_candidates(cb["run_dir"], ids, decode_ids(cb["candidate_rounds"])) + split_models(wb, 2)
        for x, y in zip(split_models(wa, 2), got, strict=True):
            for u, v in zip(x, y, strict=True):
                np.testing.assert_array_equal(u, v)
    assert plain._download_bytes == shared._download_bytes  # rounds.csv counts what the clients obtain
    # a store restored from a checkpoint without these blobs: the message's blobs are written first
    for blob in (tmp_path / "True" / "checkpoint" / "blobs").iterdir():
        blob.unlink()
    msg = next(iter(shared.train_messages(3)))
    cfg = unpack_request(msg)[1]
    assert len(shared_candidates(cfg["run_dir"], decode_ids(cfg["candidate_ids"]),
                                 decode_ids(cfg["candidate_rounds"]))) == 2


def test_send_windowed_refused_message_is_an_error_not_a_silent_gap():
    from fedfomo.server import send_windowed

    grid = _FakeGrid()
    grid.push_messages = lambda messages: []
    msg = SimpleNamespace(metadata=SimpleNamespace(dst_node_id=17))
    with pytest.raises(RuntimeError, match="round 2: the SuperLink refused the message for node 17"):
        send_windowed(grid, iter([msg]), window=2, timeout=1, where="round 2", poll_s=0)


def test_shared_store_uploads_are_left_in_the_run_folder_and_read_back(tmp_path, server_identity):
    from fedfomo.checkpoint import blob_path, put_blob

    def strategy(shared):
        st = FedFomoStrategy(num_models=2, epsilon=0.0, epsilon_decay=1.0, num_clients=3, num_rounds=4,
                             participation=1.0, seed=0, initial_weights=[np.zeros(2)],
                             recorder=RunRecorder(tmp_path / str(shared), 4, workers=1, progress=False))
        st.shared_store, st.nodes = shared, {c: 900 + c for c in range(3)}
        st.run_info = {"run_dir": str(tmp_path / str(shared))}
        return st

    plain, shared = strategy(False), strategy(True)
    assert all("upload_to" not in unpack_request(m)[1] for m in plain.train_messages(1))
    assert [unpack_request(m)[1]["upload_to"] for m in shared.train_messages(1)] == [
        "store_0_r0001", "store_1_r0001", "store_2_r0001"]
    assert all("upload_to" not in unpack_request(m)[1] for m in shared.evaluate_messages(range(3)))
    weights = [np.array([1.5, -2.0])]
    put_blob(tmp_path / "True", "store_1_r0001", weights)
    up = shared.incoming(Upload(cid=1, weights=[], num_examples=5, metrics={"upload_in_store": 1, "diverged": 0}), 1)
    # named by its blob, not read: the server's memory does not grow with the population
    assert up.weights == [] and up.blob == str(blob_path(tmp_path / "True", "store_1_r0001")) and up.nbytes == 16
    assert "upload_in_store" not in up.metrics  # not a column of clients.csv
    shared.aggregate(1, {1: up})
    assert not shared.store.in_memory(1) and shared.store_round[1] == 1
    np.testing.assert_array_equal(shared.store[1][0], weights[0])  # read from the blob when asked for
    put_blob(tmp_path / "True", "store_1_r0001", [np.array([9.0, 9.0])])  # a rerun's upload replaces the file
    np.testing.assert_array_equal(shared.store[1][0], [9.0, 9.0])
    sent = Upload(cid=2, weights=[np.array([np.nan, 0.0])], num_examples=5, metrics={"diverged": 1})
    assert shared.incoming(sent, 1) is sent  # a diverged upload travels in its reply and is rejected there


def test_fedfomo_strategy_follows_the_epsilon_schedule(tmp_path):
    # epsilon 1.0 decaying by 0.5 a round: round 3 and later are greedy
    st = _strategy(tmp_path, n=6, m=2)
    st.epsilon, st.epsilon_decay = 1.0, 0.5
    st.aggregate(1, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))], "", "") for c in range(6)})
    st.affinity[0] = [1.0, 0.0, 0.0, 0.0, 0.0, 9.0]  # client 0's best other is 5
    assert [decode_ids(st.candidates(0, r)[1]["candidate_ids"]) for r in range(3, 9)] == [[0, 5]] * 6
    # without the decay epsilon stays 1: the one slot is uniform over the five others, not always 5
    st.epsilon_decay = 0.0
    assert {decode_ids(st.candidates(0, r)[1]["candidate_ids"])[1] for r in range(2, 40)} == {1, 2, 3, 4, 5}
