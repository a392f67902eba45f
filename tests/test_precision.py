"""``sim.bf16``: training under the client's autocast context must see its own updates."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from fedfomo.client_app import _precision
from fedfomo.training import OptimConfig, evaluate, train


def _data(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.full((n, 1, 4, 4), 64, dtype=torch.uint8)
    x[y == 1] = 192  # bright images are class 1: separable
    x = (x.int() + torch.randint(-20, 21, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


def test_bf16_autocast_over_a_whole_message_trains_and_evaluates_the_current_weights():
    cfg = OmegaConf.create({"sim": {"bf16": True, "gpus_per_client": 0}})
    x, y = _data()
    opt = OptimConfig(lr=0.5, momentum=0.0, weight_decay=0.0, batch_size=50)
    kw = dict(mean=(0.5,), std=(0.25,))
    model = _model()
    with _precision(cfg):  # one context around several passes, as a client's fit has
        loss0, _ = evaluate(model, x, y, **kw)
        first = train(model, x, y, epochs=1, optim=opt, generator=torch.Generator().manual_seed(1), **kw)
        last = train(model, x, y, epochs=1, optim=opt, generator=torch.Generator().manual_seed(2), **kw)
        loss1, acc1 = evaluate(model, x, y, **kw)
        with torch.no_grad():  # an in-place change of the weights (a merge) is seen by the next pass
            for p in model.parameters():
                p.zero_()
        loss2, _ = evaluate(model, x, y, **kw)
    assert last < 0.5 * first and loss1 < 0.5 * loss0 and acc1 > 0.95
    assert abs(loss2 - torch.log(torch.tensor(2.0)).item()) < 1e-3  # zero weights: uniform prediction
