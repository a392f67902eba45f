"""pFedHN (Shamsian et al. 2021): the hypernetwork's gradient, its server step, defaults and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fedfomo.config import ConfigError, validate_config
from fedfomo.messages import Upload
from fedfomo.methods import get
from fedfomo.methods.pfedhn import HyperNetwork, PFedHNStrategy, hypernetwork_gradients, strategy_options
from fedfomo.results import RunRecorder
from tests.test_methods import _cfg

SHAPES = [(3, 4), (3,)]  # a toy target: a linear layer, 4 features -> 3 classes


def _hnet(seed=0):
    torch.manual_seed(seed)
    return HyperNetwork(5, SHAPES, embed_dim=2, hidden_dim=6, n_hidden=2)


def test_hypernetwork_gradient_of_one_sgd_step_matches_autograd_on_a_toy_target():
    hnet = _hnet()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 4, generator=g), torch.randint(0, 3, (7,), generator=g)
    eta = 0.1

    def loss(theta):
        return F.cross_entropy(F.linear(x, theta[0], theta[1]), y)

    theta = [t.detach().requires_grad_(True) for t in hnet(2)]
    grad_theta = torch.autograd.grad(loss(theta), theta)
    trained = [t.detach() - eta * gt for t, gt in zip(theta, grad_theta)]  # the client's one SGD step
    delta = [t.detach() - tt for t, tt in zip(theta, trained)]
    ours = hypernetwork_gradients(hnet, 2, delta)
    expected = torch.autograd.grad(loss(hnet(2)), list(hnet.parameters()), allow_unused=True)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, eta * b)
    emb = dict(zip([n for n, _ in hnet.named_parameters()], ours))["embeddings.weight"]
    assert torch.count_nonzero(emb[2]) > 0 and torch.count_nonzero(emb[[0, 1, 3, 4]]) == 0  # only v_2 moves


def test_generated_models_have_the_target_shapes_and_differ_between_clients():
    hnet = _hnet()
    a, b = hnet(0), hnet(1)
    assert [t.shape for t in a] == [torch.Size(s) for s in SHAPES]
    assert not torch.equal(a[0], b[0])


def _strategy(tmp_path, **kw):
    init = [np.zeros(s, dtype=np.float32) for s in SHAPES]
    opts = dict(embed_dim=2, hidden_dim=6, n_hidden=1, hn_lr=0.1, embed_lr=0.1, hn_momentum=0.0,
                hn_weight_decay=0.0)
    opts.update(kw)
    return PFedHNStrategy(num_clients=3, num_rounds=2, participation=1.0, seed=0, initial_weights=init,
                          recorder=RunRecorder(tmp_path, 2, 1, progress=False), **opts)


def test_server_step_is_sgd_on_the_delta_and_a_zero_delta_changes_nothing(tmp_path):
    st = _strategy(tmp_path)
    sent, _ = st.download(1, 1)
    assert [w.shape for w in sent] == SHAPES and all(w.dtype == np.float32 for w in sent)
    before = [p.detach().clone() for p in st.hnet.parameters()]
    st.aggregate(1, {1: Upload(1, [w.copy() for w in sent], 10, {})})  # trained == sent
    for p, q in zip(st.hnet.parameters(), before):
        torch.testing.assert_close(p.detach(), q)
    sent, _ = st.download(1, 2)
    trained = [w - 0.01 for w in sent]
    delta = [torch.from_numpy(s - t) for s, t in zip(sent, trained)]
    grads = hypernetwork_gradients(st.hnet, 1, delta)
    before = [p.detach().clone() for p in st.hnet.parameters()]
    st.aggregate(2, {1: Upload(1, trained, 10, {})})
    for p, q, g in zip(st.hnet.parameters(), before, grads):  # plain SGD step: p - lr * g (no clipping)
        torch.testing.assert_close(p.detach(), q - 0.1 * g, rtol=1e-5, atol=1e-6)
    # the model sent now moved towards the trained one
    after, _ = st.final_download(1)
    assert sum(np.abs(a - t).sum() for a, t in zip(after, trained)) < sum(np.abs(s - t).sum()
                                                                         for s, t in zip(sent, trained))


def test_defaults_follow_the_authors_and_bad_embedding_size_is_one_line():
    cfg = _cfg("method=pfedhn", "dataset=mnist")
    validate_config(cfg)
    opts = strategy_options(cfg)
    assert opts["embed_dim"] == 4  # int(1 + 15 / 4)
    assert (opts["hidden_dim"], opts["n_hidden"], opts["hn_lr"], opts["embed_lr"]) == (100, 3, 0.01, 0.01)
    assert get("pfedhn").facts(cfg) == {"pfedhn_embed_dim": 4}
    assert strategy_options(_cfg("method=pfedhn", "num_clients=100"))["embed_dim"] == 26
    for override, key, allowed in [("method.embed_dim=0", "method.embed_dim", ">= 1"),
                                   ("method.hidden_dim=0", "method.hidden_dim", ">= 1"),
                                   ("method.lr=0", "method.lr", "(0.0, inf]"),
                                   ("method.momentum=1", "method.momentum", "[0.0, 1.0)")]:
        with pytest.raises(ConfigError) as err:
            validate_config(_cfg("method=pfedhn", override))
        msg = str(err.value)
        assert "\n" not in msg and key in msg and allowed in msg
