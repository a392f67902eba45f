"""The authors' code (NVlabs/FedFomo) as options: hand-computed values, validation, and a run in this process.

EXTENDED_README.md, "Differences from the authors' code", lists each difference; the options
here are ``method.warmup_epochs``, ``method.affinity_norm``, ``method.extra_candidates`` (with
``method.num_subfederations``) and ``method.candidate_pool``. Their defaults must change nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fedfomo import fomo
from fedfomo.messages import Upload, decode_ids, encode_floats, encode_ids, split_models, unpack_request
from fedfomo.methods.fedfomo import FedFomoClient, FedFomoStrategy
from fedfomo.results import RunRecorder
from tests.inprocess import InProcessGrid, client_rows, run_in_process
from tests.test_methods import _cfg, _data, _init, _settings


def _strategy(tmp_path, n=4, m=3, participation=1.0, **options):
    init = [np.zeros(2), np.zeros(1)]
    return FedFomoStrategy(num_models=m, epsilon=0.0, epsilon_decay=0.0, num_clients=n, num_rounds=5,
                           participation=participation, seed=0, initial_weights=init,
                           recorder=RunRecorder(tmp_path, 5, workers=1, progress=False), **options)


def _up(cid, weights, ids="", raw=""):
    return Upload(cid=cid, weights=weights, num_examples=10, metrics={"candidate_ids": ids, "weights": raw})


# -- 2. the P update: raw (paper) or divided by |sum w| (authors) ---------------------------------
def test_affinity_increments_by_hand():
    raw = np.array([0.5, -0.25, 2.0])  # sum 2.25
    np.testing.assert_allclose(fomo.affinity_increments(raw, "none"), raw)
    np.testing.assert_allclose(fomo.affinity_increments(raw, "abs_sum"), [2 / 9, -1 / 9, 8 / 9])
    # |sum|, not sum of |w|: all negative keeps the signs, divides by 2
    np.testing.assert_allclose(fomo.affinity_increments(np.array([-0.5, -1.5]), "abs_sum"), [-0.25, -0.75])
    # a sum of 0 gets the authors' floor 1e-9 added: huge increments, as in their code
    np.testing.assert_allclose(fomo.affinity_increments(np.array([1.0, -1.0]), "abs_sum"), [1e9, -1e9])
    np.testing.assert_allclose(fomo.affinity_increments(np.array([0.0, 0.0]), "abs_sum"), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"method\.affinity_norm='l1' is not supported; allowed: none, abs_sum"):
        fomo.affinity_increments(raw, "l1")


def test_update_affinity_normalised_and_server_averages_left_out():
    p = np.eye(3)
    q = fomo.update_affinity(p, 1, [1, 0, 2], np.array([0.5, -0.25, 2.0]), "abs_sum")
    np.testing.assert_allclose(q, [[1, 0, 0], [-1 / 9, 1 + 2 / 9, 8 / 9], [0, 0, 1]])
    np.testing.assert_array_equal(p, np.eye(3))  # pure
    # ids < 0 (server-made averages) count in the normaliser (sum 4) but add nothing, and never wrap around
    q = fomo.update_affinity(p, 0, [0, fomo.SUBFED_ID, fomo.GLOBAL_ID], np.array([1.0, 2.0, 1.0]), "abs_sum")
    np.testing.assert_allclose(q, [[1.25, 0, 0], [0, 1, 0], [0, 0, 1]])
    q = fomo.update_affinity(p, 0, [0, fomo.GLOBAL_ID], np.array([1.0, 5.0]))
    np.testing.assert_allclose(q, [[2.0, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_strategy_uses_the_configured_normaliser(tmp_path):
    raw = encode_floats(np.array([0.1, 0.7, -0.2]))  # sum 0.6
    for norm, row in (("none", [1.1, 0.0, 0.7, -0.2]), ("abs_sum", [1 + 1 / 6, 0.0, 7 / 6, -1 / 3])):
        st = _strategy(tmp_path, affinity_norm=norm)
        st.aggregate(2, {0: _up(0, [np.zeros(2), np.zeros(1)], encode_ids([0, 2, 3]), raw)})
        np.testing.assert_allclose(st.affinity[0], row)


# -- 3. sub-federation and global averages as extra candidates ----------------------------------
def _block_p():
    """Clients 0-2 and 3-5 credit each other (P = 1 inside a block), -3 across."""
    p = np.full((6, 6), -3.0)
    p[:3, :3] = 1.0
    p[3:, 3:] = 1.0
    return p


def test_subfederations_are_the_blocks_of_p():
    for kernel in ("rbf", "softmax"):
        labels = fomo.subfederation_labels(_block_p(), 2, seed=0, kernel=kernel)
        assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
    # a large P (raw weights add up) does not overflow the softmax
    labels = fomo.subfederation_labels(_block_p() * 1000.0, 2, seed=0)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
    np.testing.assert_array_equal(fomo.subfederation_labels(_block_p(), 1, seed=0), np.zeros(6))
    # scaling P by 1000 gives the very same labels, numbering included
    np.testing.assert_array_equal(labels, fomo.subfederation_labels(_block_p(), 2, seed=0))
    # seeded: the same P and seed give the same groups, also where P has no clear blocks
    noisy = np.random.default_rng(4).normal(size=(8, 8))
    first, again = (fomo.subfederation_labels(noisy, 3, seed=5) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match=r"method\.num_subfederations=7 is out of range; allowed: 1\.\.6"):
        fomo.subfederation_labels(_block_p(), 7, seed=0)


def test_server_averages_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    store = {0: [np.array([0.0])], 1: [np.array([3.0])], 2: [np.array([10.0])], 3: [np.array([20.0])]}
    rounds = {0: 2, 1: 2, 2: 1, 3: 2}  # client 2's upload is older than client 3's: left out of group 1
    sizes = {0: 1, 1: 2, 2: 1, 3: 3}
    ids, models = fomo.server_averages(labels, store, rounds, sizes, "both")
    # group 0: (0*1 + 3*2) / 3 = 2; group 1: client 3 only = 20; group 2: nobody uploaded, skipped
    assert ids == [fomo.SUBFED_ID, fomo.SUBFED_ID - 1, fomo.GLOBAL_ID]
    assert [float(m[0][0]) for m in models] == [2.0, 20.0, 11.0]  # global: simple mean of the groups
    ids, models = fomo.server_averages(labels, store, rounds, sizes, "subfed")
    assert ids == [-2, -3] and [float(m[0][0]) for m in models] == [2.0, 20.0]
    ids, models = fomo.server_averages(labels, store, rounds, sizes, "global")
    assert ids == [-1] and float(models[0][0][0]) == 11.0
    assert fomo.server_averages(labels, store, rounds, sizes, "none") == ([], [])
    with pytest.raises(ValueError, match=r"method\.extra_candidates='cluster' is not supported"):
        fomo.server_averages(labels, store, rounds, sizes, "cluster")


def test_strategy_sends_the_averages_after_the_chosen_models(tmp_path):
    st = _strategy(tmp_path, n=6, m=2, extra_candidates="both", num_subfederations=2)
    st.affinity = _block_p()
    st.aggregate(1, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))]) for c in range(6)})
    st.affinity = _block_p()  # aggregate without weights left P as it was; set it again to be explicit
    w, cfg = st.download(0, 2)
    ids = decode_ids(cfg["candidate_ids"])
    other = ids[1]  # 1 or 2 (a tie in P, broken at random)
    assert ids[0] == 0 and other in (1, 2) and sorted(ids[2:]) == [-3, -2, -1] and ids[-1] == fomo.GLOBAL_ID
    models = split_models(w, 2)
    assert len(models) == 5
    subfeds = sorted(float(m[1][0]) for m in models[2:4])
    # the means of clients 0-2 and 3-5, then their mean
    assert subfeds == pytest.approx([1.0, 4.0]) and float(models[4][1][0]) == pytest.approx(2.5)
    # the weights reported for the averages move nothing in P
    st.aggregate(2, {0: _up(0, models[0], encode_ids(ids), encode_floats(np.array([0.0, 0.5, 9.0, 9.0, 9.0])))})
    expect = _block_p()[0]
    expect[other] += 0.5
    np.testing.assert_allclose(st.affinity[0], expect)
    # default: no averages
    plain = _strategy(tmp_path, n=6, m=2)
    plain.aggregate(1, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))]) for c in range(6)})
    assert len(decode_ids(plain.download(0, 2)[1]["candidate_ids"])) == 2


# -- 1. round 0: every client trains warmup_epochs and uploads, no candidates ------------------
def test_warmup_round_takes_every_client_then_sampling_resumes(tmp_path, server_identity):
    st = _strategy(tmp_path, n=4, participation=0.5, warmup_epochs=2)
    assert st.warmup_round and not _strategy(tmp_path).warmup_round
    st.nodes = {c: 900 + c for c in range(4)}
    configs = [unpack_request(m)[1] for m in st.train_messages(0)]
    assert len(configs) == 4
    assert all(c == {"server_round": 0, "candidate_ids": "", "warmup_epochs": 2} for c in configs)
    st.aggregate(0, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))]) for c in range(4)})
    np.testing.assert_array_equal(st.affinity, np.eye(4))
    assert sorted(st.store) == [0, 1, 2, 3] and set(st.store_round.values()) == {0}
    msgs = list(st.train_messages(1))
    assert len(msgs) == 2  # participation 0.5 again
    config = unpack_request(msgs[0])[1]
    assert "warmup_epochs" not in config and len(decode_ids(config["candidate_ids"])) == 3


def test_client_warmup_trains_warmup_epochs_at_round_1_lr(monkeypatch):
    calls = []

    def fake_train(model, x, y, *, epochs, optim, **kwargs):
        calls.append((epochs, optim.lr))
        return 0.0

    monkeypatch.setattr("fedfomo.client.train", fake_train)
    client = FedFomoClient(0, _data(), _settings(num_models=3, epsilon=0.3, epsilon_decay=0.05, distance="l1"),
                           RecordDict())
    upload, n, metrics = client.fit(_init(), {"server_round": 0, "candidate_ids": "", "warmup_epochs": 3})
    assert calls == [(3, 0.05)] and metrics["candidate_ids"] == "" and n == 16
    assert all(np.array_equal(a, b) for a, b in zip(upload, _init(), strict=True))  # trained from the initial model
    assert client.s.local_epochs == 1 and client.load_state("baseline") is None  # baseline stays the initial model
    client.fit(_init(), {"server_round": 3, "candidate_ids": ""})
    assert calls[1] == (1, pytest.approx(0.05 * 0.99**2))


# -- the pool of the M-1 others: every stored upload, or the latest round's uploaders (authors) ----
def _store(st, rounds):
    """Give ``st`` a stored upload of each client in ``rounds`` ({cid: round}), client c's model all c."""
    for c, r in sorted(rounds.items()):
        st.aggregate(r, {c: _up(c, [np.full(2, float(c)), np.full(1, float(c))])})


def test_last_round_pool_is_the_latest_uploaders_and_the_own_model(tmp_path):
    st = _strategy(tmp_path, n=6, m=6, participation=0.5, candidate_pool="last_round")
    _store(st, {0: 1, 1: 3, 2: 3, 3: 2, 4: 3})  # client 5 never uploaded
    assert st.pool(0) == [0, 1, 2, 4]  # 1, 2, 4 uploaded in round 3; its own (round 1) stays
    assert st.pool(3) == [1, 2, 3, 4] and st.pool(5) == [1, 2, 4]
    # with M = N the download is all of the pool, own first: the stale uploads of 0 and 3 are left out
    assert sorted(decode_ids(st.download(5, 4)[1]["candidate_ids"])) == [1, 2, 4]
    ids = decode_ids(st.download(3, 4)[1]["candidate_ids"])
    assert ids[0] == 3 and sorted(ids) == [1, 2, 3, 4]
    # default: every stored upload
    plain = _strategy(tmp_path, n=6, m=6, participation=0.5)
    _store(plain, {0: 1, 1: 3, 2: 3, 3: 2, 4: 3})
    assert plain.pool(5) == [0, 1, 2, 3, 4]
    assert sorted(decode_ids(plain.download(5, 4)[1]["candidate_ids"])) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"method\.candidate_pool='x' is not supported; allowed: stored, last_round"):
        _strategy(tmp_path, candidate_pool="x")


def test_last_round_pool_after_warmup_keeps_round_0s_sample(tmp_path):
    from fedfomo.strategy import sample_clients

    for sampling in ("fixed", "fresh"):
        st = _strategy(tmp_path, n=10, m=10, participation=0.3, warmup_epochs=1, candidate_pool="last_round",
                       sampling=sampling)
        _store(st, dict.fromkeys(range(10), 0))  # round 0: every client uploads
        kept = sample_clients(10, 0.3, 0, 0, sampling)
        assert len(kept) == 3
        for c in range(10):
            assert st.pool(c) == sorted(set(kept) | {c})
        if sampling == "fixed":  # the authors: the kept round-0 uploads are the clients of every round
            assert kept == sample_clients(10, 0.3, 1, 0, "fixed")
        _store(st, {c: 1 for c in sample_clients(10, 0.3, 1, 0, sampling)})  # after round 1: its uploaders
        assert st.pool(9) == sorted(set(sample_clients(10, 0.3, 1, 0, sampling)) | {9})
    # full participation: the same as the default
    full = _strategy(tmp_path, n=4, m=4, warmup_epochs=1, candidate_pool="last_round")
    _store(full, dict.fromkeys(range(4), 0))
    assert all(full.pool(c) == [0, 1, 2, 3] for c in range(4))


# -- validation: one line naming the key and the allowed values --------------------------------
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["method.warmup_epochs=-1"], "method.warmup_epochs=-1 is out of range; allowed: >= 0"),
        (["method.warmup_epochs=1.5"], "method.warmup_epochs=1.5 must be an integer"),
        (["method.affinity_norm=sum"], "method.affinity_norm='sum' is not supported; allowed: none, abs_sum"),
        (["method.extra_candidates=cluster"],
         "method.extra_candidates='cluster' is not supported; allowed: none, global, subfed, both"),
        (["method.extra_candidates=both"],
         "method.num_subfederations=null means the latent partition's D, but partition=pathological; "
         "allowed: an integer 1..15, or partition=latent"),
        (["method.extra_candidates=both", "method.num_subfederations=16"],
         "method.num_subfederations=16 is out of range; allowed: 1..15"),
        (["method.candidate_pool=all"], "method.candidate_pool='all' is not supported; allowed: stored, last_round"),
    ],
)
def test_bad_settings_are_one_line(overrides, says):
    from fedfomo.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(_cfg("method=fedfomo", *overrides))
    assert str(err.value) == says and "\n" not in str(err.value)


def test_defaults_change_nothing_and_options_reach_strategy_and_summary():
    from fedfomo import methods
    from fedfomo.config import ConfigError, validate_config
    from fedfomo.report import method_label

    fedfomo, ma = methods.get("fedfomo"), methods.get("fedfomo_ma")
    cfg = _cfg("method=fedfomo")
    assert fedfomo.strategy_options(cfg) == {"num_models": 5, "epsilon": 0.3, "epsilon_decay": 0.05,
                                             "warmup_epochs": 0, "affinity_norm": "none",
                                             "extra_candidates": "none", "num_subfederations": 1,
                                             "candidate_pool": "stored"}
    assert fedfomo.facts(cfg) == {"num_models": 5}  # a default run's summary.json is as before
    cfg = _cfg("method=fedfomo", "partition=latent", "partition.num_distributions=3", "method.warmup_epochs=1",
               "method.affinity_norm=abs_sum", "method.extra_candidates=both")
    validate_config(cfg)
    opts = fedfomo.strategy_options(cfg)
    assert (opts["warmup_epochs"], opts["affinity_norm"], opts["extra_candidates"], opts["num_subfederations"]) == (
        1, "abs_sum", "both", 3)
    facts = fedfomo.facts(cfg)
    assert facts["authors_options"] == ("warmup_epochs=1, affinity_norm=abs_sum, extra_candidates=both, "
                                        "num_subfederations=3")
    assert method_label({"method": "fedfomo", **facts}) == f"fedfomo ({facts['authors_options']})"
    assert method_label({"method": "fedfomo", "num_models": 5}) == "fedfomo"
    # FedFomo-MA: warm-up and the normaliser; the authors have no extra candidates for it
    cfg = _cfg("method=fedfomo_ma", "method.warmup_epochs=1", "method.affinity_norm=abs_sum")
    validate_config(cfg)
    assert {k: ma.strategy_options(cfg)[k] for k in ("warmup_epochs", "affinity_norm")} == {
        "warmup_epochs": 1, "affinity_norm": "abs_sum"}
    assert "extra_candidates" not in ma.strategy_options(cfg)
    with pytest.raises(ConfigError, match=r"method.affinity_norm='x' is not supported; allowed: none, abs_sum"):
        validate_config(_cfg("method=fedfomo_ma", "method.affinity_norm=x"))


def test_a_config_saved_before_the_options_means_their_defaults():
    from omegaconf import OmegaConf

    from fedfomo import methods

    cfg = _cfg("method=fedfomo")
    OmegaConf.set_struct(cfg, False)
    for key in ("warmup_epochs", "affinity_norm", "extra_candidates", "num_subfederations", "candidate_pool"):
        del cfg.method[key]
    methods.get("fedfomo").validate(cfg)
    assert methods.get("fedfomo").strategy_options(cfg) == methods.get("fedfomo").strategy_options(
        _cfg("method=fedfomo"))
    assert methods.get("fedfomo").facts(cfg) == {"num_models": 5}


# -- 4. the embedding layer: a hook on fc2 before an in-place ReLU records the ReLU's output ------
def test_authors_fc2_hook_sees_the_relu_output_as_our_embedding():
    from fedfomo.vgg import build_vgg11, vgg_batch, vgg_embed

    torch.manual_seed(0)
    model = build_vgg11(3, 10).eval()
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    seen = []
    handle = model.classifier[3].register_forward_hook(lambda m, i, o: seen.append(o))  # the 2nd Linear, as theirs
    with torch.no_grad():
        model(vgg_batch(x, mean, std, torch.device("cpu")))
    handle.remove()
    hooked = seen[0].numpy()
    assert (hooked >= 0).all()  # the in-place ReLU that follows overwrote the tensor the hook kept
    np.testing.assert_allclose(hooked, vgg_embed(model, x, mean, std, torch.device("cpu")), rtol=1e-5, atol=1e-6)


# -- the options through the real round loop and ClientApp, in this process ------------------------
AUTHORS = ("method.warmup_epochs=1 method.affinity_norm=abs_sum method.extra_candidates=both "
           "method.num_subfederations=2 method.candidate_pool=last_round")


def _run_in_process(out, data_root, overrides: str, grid_type=InProcessGrid) -> tuple:
    run_config = {"dataset": "mnist", "method": "fedfomo", "num-clients": 4, "num-server-rounds": 2,
                  "participation": 0.5, "local-epochs": 1, "samples-per-client": 60, "data-root": str(data_root),
                  "overrides": f"method.num_models=2 optim.lr=0.05 {overrides}"}
    summary = run_in_process(out, run_config, 4, grid_type)
    return summary, client_rows(out)


@pytest.fixture(scope="module")
def authors_run(tmp_path_factory, data_root):
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    out = tmp_path_factory.mktemp("authors")
    return (out, *_run_in_process(out, data_root, AUTHORS))


@pytest.mark.realdata
def test_round_0_and_the_options_through_the_round_loop(authors_run, tmp_path, data_root, server_identity):
    out, summary, rows = authors_run
    by_round = {}
    for r in rows:
        by_round.setdefault(int(r["round"]), []).append(r)
    assert sorted(by_round) == [0, 1, 2]
    assert len(by_round[0]) == 4 and all(r["candidate_ids"] == "" for r in by_round[0])  # everyone, no candidates
    assert all(len(by_round[t]) == 2 for t in (1, 2))  # then participation 0.5
    # round 1 already federates: own upload + 1 other, then the sub-federation averages and the global one
    for r in by_round[1] + by_round[2]:
        ids = decode_ids(r["candidate_ids"])
        assert ids[0] == int(r["cid"]) and ids[1] >= 0 and ids[-1] == fomo.GLOBAL_ID
        assert 1 <= len(ids[2:-1]) <= 2 and all(i in (-2, -3) for i in ids[2:-1])
    # the other model comes from the latest round's uploaders: round 0's sample, then round 1's clients
    from fedfomo.strategy import sample_clients

    kept = sample_clients(4, 0.5, 0, summary["seed"], "fresh")
    assert all(decode_ids(r["candidate_ids"])[1] in set(kept) - {int(r["cid"])} for r in by_round[1])
    uploaders = {int(r["cid"]) for r in by_round[1]}
    assert all(decode_ids(r["candidate_ids"])[1] in uploaders - {int(r["cid"])} for r in by_round[2])
    np.testing.assert_array_equal(np.load(out / "affinity" / "round_000.npy"), np.eye(4))
    p1 = np.load(out / "affinity" / "round_001.npy")
    for r in by_round[1]:  # each row of P moved by w / |sum w| over all the weights, the averages' included
        cid, w = int(r["cid"]), np.array([float(v) for v in r["weights"].split(",")])
        expect = fomo.update_affinity(np.eye(4), cid, decode_ids(r["candidate_ids"]), w, "abs_sum")[cid]
        np.testing.assert_allclose(p1[cid], expect)
    assert summary["rounds_completed"] == 3 and summary["num_rounds"] == 2
    assert summary["authors_options"].startswith("warmup_epochs=1, affinity_norm=abs_sum")
    assert json.loads((out / "status.json").read_text())["status"] == "completed"
    # the defaults: rounds 1 and 2 only, nothing but client models downloaded
    summary, rows = _run_in_process(tmp_path / "default", data_root, "")
    assert sorted({int(r["round"]) for r in rows}) == [1, 2] and "authors_options" not in summary
    assert all(len(decode_ids(r["candidate_ids"])) <= 2 for r in rows)


class _DiesInRound1(InProcessGrid):
    """Fails the way a killed server does, when round 1's first message is sent."""

    def push_messages(self, messages):
        messages = list(messages)
        if any(m.metadata.message_type == "train" and m.metadata.group_id == "1" for m in messages):
            raise RuntimeError("killed in round 1")
        return super().push_messages(messages)


@pytest.mark.realdata
def test_a_run_killed_after_round_0_resumes_to_the_same_results(authors_run, tmp_path, data_root, server_identity):
    from fedfomo.runs import write_status

    ref_out, ref_summary, ref_rows = authors_run
    out = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed in round 1"):
        _run_in_process(out, data_root, AUTHORS, grid_type=_DiesInRound1)
    round0 = client_rows(out)
    assert {int(r["round"]) for r in round0} == {0}
    write_status(out, attempt=2)  # what resume=RUN_DIR does before the run starts again
    summary, rows = _run_in_process(out, data_root, AUTHORS)  # new nodes: client state comes from the files
    assert rows[:4] == round0  # round 0 was checkpointed, not run again (its timings are the first attempt's)
    keys = ("round", "cid", "test_acc", "train_loss", "candidate_ids", "weights")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in ref_rows]
    assert summary["per_client_final_acc"] == ref_summary["per_client_final_acc"]
    for r in (0, 1, 2):
        np.testing.assert_array_equal(np.load(out / "affinity" / f"round_{r:03d}.npy"),
                                      np.load(ref_out / "affinity" / f"round_{r:03d}.npy"))


def test_runs_with_the_options_never_share_a_paper_table_cell_with_default_runs():
    from fedfomo.tables import paper_cell

    s = {"method": "fedfomo", "num_models": 5, "dataset": "cifar10", "partition": "latent", "num_clients": 15,
         "num_distributions": 5, "num_rounds": 20, "local_epochs": 5}
    plain, authors = paper_cell(s), paper_cell({**s, "authors_options": "affinity_norm=abs_sum"})
    assert plain.variant == "" and authors.variant == "authors options affinity_norm=abs_sum"
    assert (plain.table, plain.column, plain.row) == (authors.table, authors.column, authors.row)
