"""FedFomo (Zhang et al., "Personalized Federated Learning with First Order Model Optimization", ICLR 2021).

Authors' code: NVlabs/FedFomo. The math (Eq. 3 weights, Eq. 13 merge, selection, epsilon
schedule, P update) is :mod:`fedfomo.fomo`; here are its client (evaluate the downloaded
candidates on the validation split, weight, merge) and its server (a store of every client's
latest upload and the affinity matrix P). Settings: ``method.num_models`` (M, own model
included), ``method.epsilon``, ``method.epsilon_decay``, ``method.distance``.

Where the authors' code differs from what we do by default, the options below switch to their
way (EXTENDED_README.md, "Differences from the authors' code"); the defaults change nothing:

- ``method.warmup_epochs`` (0): > 0 adds a round 0 before round 1 in which every client trains
  that many epochs from the common initial model and uploads, with no candidates (the authors'
  round 0 with partial participation, 1 epoch); not counted in ``num_rounds``.
- ``method.affinity_norm`` (``none``): ``abs_sum`` divides the weights added to P by ``|sum w|``
  (:func:`fedfomo.fomo.affinity_increments`).
- ``method.extra_candidates`` (``none``): ``subfed`` / ``global`` / ``both`` also sends every
  client the averages of the sub-federations found by spectral clustering of P
  (``method.num_subfederations`` of them; null: the latent partition's D) and / or their mean
  (:func:`fedfomo.fomo.server_averages`); they are weighted and merged like the other
  candidates but add nothing to P.
- ``method.candidate_pool`` (``stored``): ``last_round`` draws the M-1 others only from the
  clients that uploaded in the latest round with uploads (the authors' ``uploaded_clients``; after
  a warm-up round 0 with partial participation, only the sample of them that round 0's draw takes,
  as the authors keep ``m`` of the round-0 uploads); the own model is still the client's latest
  upload. Equal to ``stored`` with full participation.

With ``sim.shared_store`` (simulations only) the server sends a client its stored candidates as
references, ``candidate_rounds`` beside ``candidate_ids``: each names the checkpoint blob that
holds that upload (:func:`store_key`, written once after its round), which the client reads from
the run folder (:func:`shared_candidates`); only server-made models (the extra candidates, the
initial model) travel in the message. The models, and so every result, are the same bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np
from omegaconf import DictConfig

from fedfomo import fomo
from fedfomo.checkpoint import ModelStore, blob_path, put_blob, read_blob, unpack, write_blob
from fedfomo.client import BaseClient
from fedfomo.config import ConfigError, check_choice, check_float, check_int, require
from fedfomo.messages import Upload, concat_models, decode_floats, decode_ids, encode_floats, encode_ids, split_models
from fedfomo.methods import Method
from fedfomo.strategy import PersonalizedStrategy, Weights, sample_clients

#: where the M-1 others are drawn from (``method.candidate_pool``): every stored upload, or the latest round's
CANDIDATE_POOLS = ("stored", "last_round")


def store_key(cid: int, server_round: int) -> str:
    """The checkpoint blob name of client ``cid``'s upload of ``server_round`` (``store_17_r0005``).

    Parameters
    ----------
    cid : int
        The uploading client.
    server_round : int
        The round of the upload.

    Returns
    -------
    str
        The blob's name (see :func:`fedfomo.checkpoint.save_server`).

    """
    return f"store_{cid}_r{server_round:04d}"


def shared_candidates(run_dir: str, ids: list[int], rounds: list[int]) -> list[Weights]:
    """The stored uploads ``ids`` (of ``rounds``) read from the run's checkpoint blobs (``sim.shared_store``).

    Parameters
    ----------
    run_dir : str
        The server's run folder (a simulated client runs on the same machine).
    ids : list of int
        Candidate ids; those beyond ``rounds`` (server-made models, sent in the message) are skipped.
    rounds : list of int
        Round of each stored candidate's upload, in the order of ``ids``.

    Returns
    -------
    list of list of np.ndarray
        One model per entry of ``rounds``.

    """
    return [read_blob(blob_path(run_dir, store_key(c, r))) for c, r in zip(ids, rounds)]


class FedFomoClient(BaseClient):
    """FedFomo (Zhang et al., ICLR 2021): evaluate downloaded models, weight them (Eq. 3), merge (Eq. 13).

    The server sends the candidates' weights concatenated, with their ids in
    ``config["candidate_ids"]``; with ``sim.shared_store`` the stored ones are read from the run
    folder instead (``config["candidate_rounds"]``, :func:`shared_candidates`). The baseline
    theta_i^(t-1) is the personalized model from the start of this client's previous round
    (before local training), kept in client state; before the first federated update it is the
    common initial model.
    """

    def fit(self, parameters: Weights, config: dict) -> tuple[Weights, int, dict]:
        """A round as :class:`BaseClient`'s; in the warm-up round (``method.warmup_epochs``) with that many epochs.

        The server sends ``warmup_epochs`` > 0 only in round 0, with the initial model and no
        candidates: the client evaluates it, trains ``warmup_epochs`` epochs (learning rate of
        round 1) and uploads; its baseline stays the initial model, as after round 1 without warm-up.
        With ``config["upload_to"]`` (``sim.shared_store``) the upload is written to that blob of the
        run folder and the reply carries no weights.
        """
        warmup = int(config.get("warmup_epochs", 0))
        settings = self.s
        if warmup > 0:
            self.s = dataclasses.replace(settings, local_epochs=warmup)
        try:
            upload, n, metrics = super().fit(parameters, config)
        finally:
            self.s = settings
        if config.get("upload_to") and not metrics["diverged"]:  # sim.shared_store: leave it where the server reads it
            put_blob(str(config["run_dir"]), str(config["upload_to"]), upload, durable=config.get("fsync") != "round")
            return [], n, {**metrics, "upload_in_store": 1}
        return upload, n, metrics

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        ids = decode_ids(str(config.get("candidate_ids", "")))
        if not ids:  # nothing uploaded yet: start from the server's initial model
            return list(parameters), {"candidate_ids": "", "weights": "", "reverted": 0}
        rounds = decode_ids(str(config.get("candidate_rounds", "")))  # sim.shared_store: read these from disk
        candidates = (shared_candidates(str(config.get("run_dir", "")), ids, rounds)
                      + split_models(list(parameters), self.num_arrays))
        baseline = self.load_state("baseline")
        if baseline is None:
            baseline = self.initial_weights()
        t0 = time.perf_counter()
        raw, eval_s = self.candidate_weights(baseline, candidates)
        merged, reverted = fomo.fomo_merge(baseline, candidates, raw)
        t2 = time.perf_counter()
        if commit:
            self.save_state("baseline", merged)
        return merged, {"candidate_ids": encode_ids(ids), "weights": encode_floats(raw),
                        "reverted": int(reverted), "eval_s": eval_s, "merge_s": t2 - t0 - eval_s}

    def val_loss(self, weights: Weights) -> float:
        """Mean cross-entropy of ``weights`` on this client's validation split."""
        return self.loss_on(weights, self.data.val_x, self.data.val_y)[0]

    def candidate_weights(self, baseline: Weights, candidates: list[Weights]) -> tuple[np.ndarray, float]:
        """Raw Eq. 3 weights of the candidates, and the seconds spent in validation passes."""
        t0 = time.perf_counter()
        base_loss = self.val_loss(baseline)
        cand_losses = [self.val_loss(c) for c in candidates]
        eval_s = time.perf_counter() - t0
        dists = [fomo.parameter_distance(c, baseline, str(self.hp["distance"])) for c in candidates]
        return fomo.fomo_weights(base_loss, cand_losses, dists), eval_s


class FedFomoStrategy(PersonalizedStrategy):
    """FedFomo's server: a store of every client's latest upload and the affinity matrix P.

    Parameters
    ----------
    num_models : int
        M, models downloaded per client, own included.
    epsilon, epsilon_decay : float
        Exploration schedule, see :func:`fedfomo.fomo.epsilon_at`.
    warmup_epochs : int
        > 0: a round 0 in which every client trains this many epochs and uploads (no candidates).
    affinity_norm : str
        How weights are scaled before they are added to P (:data:`fedfomo.fomo.AFFINITY_NORMS`).
    extra_candidates : str
        Server-made averages sent besides the M models (:data:`fedfomo.fomo.EXTRA_CANDIDATES`).
    num_subfederations : int
        Sub-federations the extra candidates are computed over.
    candidate_pool : str
        Which stored uploads the M-1 others are drawn from (:data:`CANDIDATE_POOLS`, :meth:`pool`).
    **kwargs
        See :class:`PersonalizedStrategy`.

    """

    def __init__(self, *, num_models: int, epsilon: float, epsilon_decay: float, warmup_epochs: int = 0,
                 affinity_norm: str = "none", extra_candidates: str = "none", num_subfederations: int = 1,
                 candidate_pool: str = "stored", **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_models = num_models
        self.epsilon = epsilon
        self.epsilon_decay = epsilon_decay
        self.warmup_epochs = warmup_epochs
        self.warmup_round = warmup_epochs > 0  # the round loop runs round 0 first
        self.affinity_norm = affinity_norm
        self.extra_candidates = extra_candidates
        self.num_subfederations = num_subfederations
        check_choice("method.candidate_pool", candidate_pool, CANDIDATE_POOLS)
        self.candidate_pool = candidate_pool
        self._extras: tuple[int, list[int], list[Weights]] | None = None  # (round, ids, models), computed once a round
        self.store = ModelStore()  # every client's latest upload (in a simulation: the path of its blob)
        self.store_round: dict[int, int] = {}  # round of each stored upload (names its checkpoint blob)
        self.affinity = np.eye(self.num_clients)
        self._rng_round = -1
        self._rng = np.random.default_rng(self.seed)

    def _rng_for(self, server_round: int) -> np.random.Generator:
        if server_round != self._rng_round:
            self._rng_round = server_round
            self._rng = np.random.default_rng([self.seed, 2, server_round])
        return self._rng

    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:
        """Client ``cid``'s download (:meth:`candidates`); with ``sim.shared_store``, where to leave its upload.

        ``upload_to`` names the blob the server's checkpoint would write for this upload: the
        simulated client writes it there itself and its reply carries no weights
        (:meth:`incoming` reads them), so the upload is not encoded, sent through Ray and written
        again.
        """
        weights, config = self.candidates(cid, server_round)
        if self.shared_store and server_round <= self.num_rounds:
            config["upload_to"] = store_key(cid, server_round)
        return weights, config

    def candidates(self, cid: int, server_round: int) -> tuple[Weights, dict]:
        """The initial model (round 0 or an empty store), or the chosen stored uploads and the server's averages."""
        if server_round == 0 and self.warmup_round:
            return self.global_weights, {"candidate_ids": "", "warmup_epochs": self.warmup_epochs}
        if not self.store:
            return self.global_weights, {"candidate_ids": ""}
        eps = fomo.epsilon_at(self.epsilon, self.epsilon_decay, server_round)
        ids = fomo.select_candidates(self.affinity[cid], cid, self.pool(cid), self.num_models, eps,
                                     self._rng_for(server_round))
        extra_ids, extra_models = self.extras(server_round)
        config = {"candidate_ids": encode_ids(ids + extra_ids)}
        if self.shared_store:  # the client reads the stored ones from their blobs: only the averages travel
            config["candidate_rounds"] = encode_ids([self.store_round[j] for j in ids])
            return concat_models(extra_models), config
        return concat_models([self.store[j] for j in ids] + extra_models), config

    def pool(self, cid: int) -> list[int]:
        """Ids client ``cid`` may download: its own stored upload and the others ``method.candidate_pool`` allows.

        ``stored``: every client with a stored upload. ``last_round``: the clients whose stored
        upload is from the latest round that has one (the authors' ``uploaded_clients``, the
        previous round's uploaders); when that is the warm-up round 0 and ``participation`` < 1,
        only those of them that round 0's client sample takes (:func:`fedfomo.strategy.sample_clients`,
        the authors' draw of ``m`` round-0 uploads to keep). The client's own upload stays
        available whatever round it is from.
        """
        if self.candidate_pool == "stored":
            return sorted(self.store)
        latest = max(self.store_round[c] for c in self.store)
        ids = {c for c in self.store if self.store_round[c] == latest}
        if latest == 0 and self.warmup_round and self.participation < 1:
            ids &= set(sample_clients(self.num_clients, self.participation, 0, self.seed, self.sampling))
        if cid in self.store:
            ids.add(cid)
        return sorted(ids)

    def download_nbytes(self, weights: Weights, extra: dict) -> int:
        """The message's models plus the stored ones its client reads from their blobs (``sim.shared_store``)."""
        stored = len(decode_ids(str(extra.get("candidate_rounds", ""))))
        return super().download_nbytes(weights, extra) + stored * sum(w.nbytes for w in self.global_weights)

    def outgoing(self, weights: Weights, extra: dict) -> tuple[Weights, dict]:
        """With ``sim.shared_store``, first write any named blob missing on disk.

        That is a stored model held in memory whose blob the checkpoint has not written yet (a
        store restored from a checkpoint older than the blobs); it is written under the name the
        checkpoint will give it.
        """
        if "candidate_rounds" in extra:
            ids, rounds = decode_ids(str(extra["candidate_ids"])), decode_ids(str(extra["candidate_rounds"]))
            run_dir = str(self.run_info["run_dir"])
            for cid, rnd in zip(ids, rounds):
                if self.store.in_memory(cid) and not blob_path(run_dir, store_key(cid, rnd)).exists():
                    write_blob(run_dir, store_key(cid, rnd), self.store[cid],
                               durable=self.run_info.get("fsync") != "round")
        return weights, extra

    def incoming(self, up: Upload, server_round: int) -> Upload:
        """An upload the client left in the run folder (``upload_to``) is named by its blob, not read.

        The client checked its weights before writing them (a diverged upload is never left
        there); the store keeps the blob's path (:class:`fedfomo.checkpoint.ModelStore`).
        """
        if int(up.metrics.get("upload_in_store", 0)) and not int(up.metrics.get("diverged", 0)):
            metrics = {k: v for k, v in up.metrics.items() if k != "upload_in_store"}
            path = blob_path(str(self.run_info["run_dir"]), store_key(up.cid, server_round))
            return dataclasses.replace(up, metrics=metrics, weights=[], blob=str(path),
                                       blob_nbytes=sum(w.nbytes for w in self.global_weights))
        return up

    def extras(self, server_round: int) -> tuple[list[int], list[Weights]]:
        """The server-made averages every client receives this round (``method.extra_candidates``).

        Computed once a round from P and the store as they are before the round (the authors
        compute them at the end of the previous round, from the same P and uploads).
        """
        if self.extra_candidates == "none":
            return [], []
        if self._extras is None or self._extras[0] != server_round:
            labels = fomo.subfederation_labels(self.affinity, self.num_subfederations, self.seed)
            ids, models = fomo.server_averages(labels, self.store, self.store_round, self.work,
                                               self.extra_candidates)
            self._extras = (server_round, ids, models)
        return self._extras[1], self._extras[2]

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> None:  # noqa: D102
        for cid in sorted(uploads):
            metrics = uploads[cid].metrics
            ids = decode_ids(str(metrics.get("candidate_ids", "")))
            if ids:
                self.affinity = fomo.update_affinity(self.affinity, cid, ids, decode_floats(str(metrics["weights"])),
                                                     self.affinity_norm)
        for cid, up in uploads.items():
            if up.blob:
                self.store.set_path(cid, up.blob)
            else:
                self.store[cid] = up.weights
            self.store_round[cid] = server_round
        self._extras = None

    def after_round(self, server_round: int) -> None:  # noqa: D102
        self.recorder.log_affinity(server_round, self.affinity)

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:  # noqa: D102
        arrays, meta = super().checkpoint_state()
        arrays["affinity"] = self.affinity
        return arrays, {**meta, "store_round": {str(c): r for c, r in sorted(self.store_round.items())}}

    def checkpoint_blobs(self) -> Mapping[str, Weights]:
        """Every stored upload under its blob name; a model is read only where its blob must be written."""
        return _StoreBlobs(self.store, self.store_round)

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:  # noqa: D102
        super().restore_state(arrays, meta)
        self._extras = None
        self.affinity = np.array(arrays["affinity"])
        if "store" in meta:  # checkpoints written before the store moved to blobs
            self.store = ModelStore()
            for cid in meta["store"]:
                self.store[int(cid)] = unpack(arrays, f"store/{cid}")
            self.store_round = dict.fromkeys(self.store, 0)
            return
        self.store_round = {int(c): int(r) for c, r in meta["store_round"].items()}
        self.store = ModelStore()
        for c, r in self.store_round.items():  # blobs not read by the caller stay on disk until needed
            if f"blob/{store_key(c, r)}/0" in arrays:
                self.store[c] = unpack(arrays, f"blob/{store_key(c, r)}")
            else:
                self.store.set_path(c, blob_path(str(self.run_info["run_dir"]), store_key(c, r)))


class _StoreBlobs(Mapping):
    """A read-only view of a :class:`ModelStore` as ``{blob name: weights}``, read on access."""

    def __init__(self, store: ModelStore, rounds: dict[int, int]) -> None:
        self._store = store
        self._cid = {store_key(c, r): c for c, r in rounds.items()}

    def __getitem__(self, key: str) -> Weights:
        return self._store[self._cid[key]]

    def __iter__(self):
        return iter(self._cid)

    def __len__(self) -> int:
        return len(self._cid)


def validate(cfg: DictConfig) -> None:
    """M in 1..num_clients, epsilon and its decay in [0, 1], a known distance, the authors' options."""
    check_int("method.num_models", require(cfg, "method.num_models"), 1, int(cfg.num_clients))
    check_float("method.epsilon", require(cfg, "method.epsilon"), 0.0, 1.0)
    check_float("method.epsilon_decay", require(cfg, "method.epsilon_decay"), 0.0, 1.0)
    check_choice("method.distance", require(cfg, "method.distance"), fomo.DISTANCES)
    validate_authors_options(cfg)


#: the authors' options and their defaults (a key missing from an older config.yaml means its default)
AUTHORS_DEFAULTS = {"warmup_epochs": 0, "affinity_norm": "none", "extra_candidates": "none",
                    "num_subfederations": None, "candidate_pool": "stored"}


def _option(cfg: DictConfig, key: str):
    return cfg.method.get(key, AUTHORS_DEFAULTS[key])


def validate_authors_options(cfg: DictConfig, extras: bool = True) -> None:
    """Check ``method.warmup_epochs``, ``method.affinity_norm`` and, with ``extras``, the extra candidates and pool.

    Raises
    ------
    ConfigError
        One line naming the key and the allowed values.

    """
    check_int("method.warmup_epochs", _option(cfg, "warmup_epochs"), 0)
    check_choice("method.affinity_norm", _option(cfg, "affinity_norm"), fomo.AFFINITY_NORMS)
    if not extras:
        return
    check_choice("method.extra_candidates", _option(cfg, "extra_candidates"), fomo.EXTRA_CANDIDATES)
    check_choice("method.candidate_pool", _option(cfg, "candidate_pool"), CANDIDATE_POOLS)
    groups = _option(cfg, "num_subfederations")
    if groups is not None:
        check_int("method.num_subfederations", groups, 1, int(cfg.num_clients))
    elif _option(cfg, "extra_candidates") != "none" and cfg.partition.name != "latent":
        raise ConfigError(f"method.num_subfederations=null means the latent partition's D, but partition="
                          f"{cfg.partition.name}; allowed: an integer 1..{int(cfg.num_clients)}, or partition=latent")


def num_subfederations(cfg: DictConfig) -> int:
    """``method.num_subfederations``, or the latent partition's D when it is null (the authors' choice); else 1."""
    groups = _option(cfg, "num_subfederations")
    if groups is not None:
        return int(groups)
    return int(cfg.partition.num_distributions) if cfg.partition.name == "latent" else 1


def authors_options(cfg: DictConfig, extras: bool = True) -> dict:
    """The strategy's keyword arguments of the authors' options (their defaults where unset)."""
    opts = {"warmup_epochs": int(_option(cfg, "warmup_epochs")), "affinity_norm": str(_option(cfg, "affinity_norm"))}
    if extras:
        opts.update(extra_candidates=str(_option(cfg, "extra_candidates")), num_subfederations=num_subfederations(cfg),
                    candidate_pool=str(_option(cfg, "candidate_pool")))
    return opts


def authors_facts(cfg: DictConfig, extras: bool = True) -> dict:
    """``{"authors_options": "key=value, ..."}`` naming the options set away from their defaults, else ``{}``.

    summary.json records it and :mod:`fedfomo.report` keeps such runs in rows of their own.
    """
    changed = [f"{k}={v}" for k, v in authors_options(cfg, extras).items()
               if k != "num_subfederations" and v != AUTHORS_DEFAULTS[k]]
    if changed and extras and _option(cfg, "extra_candidates") != "none":
        changed.append(f"num_subfederations={num_subfederations(cfg)}")
    return {"authors_options": ", ".join(changed)} if changed else {}


def strategy_options(cfg: DictConfig) -> dict:
    """M, the exploration schedule and the authors' options."""
    return {"num_models": int(cfg.method.num_models), "epsilon": float(cfg.method.epsilon),
            "epsilon_decay": float(cfg.method.epsilon_decay), **authors_options(cfg)}


METHOD = Method(name="fedfomo", client=FedFomoClient, strategy=FedFomoStrategy, validate=validate,
                strategy_options=strategy_options,
                facts=lambda cfg: {"num_models": int(cfg.method.num_models), **authors_facts(cfg)},
                reference="Zhang et al., ICLR 2021; NVlabs/FedFomo")
