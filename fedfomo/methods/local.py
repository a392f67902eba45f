"""Local training only: every client trains its own model; nothing is exchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedfomo.client import BaseClient, Weights
from fedfomo.methods import Method
from fedfomo.strategy import PersonalizedStrategy

if TYPE_CHECKING:
    from fedfomo.messages import Upload


class LocalClient(BaseClient):
    """Local training only: the model never leaves the client; it is kept in client state."""

    def personalize(  # noqa: D102
        self, parameters: Weights, config: dict, commit: bool
    ) -> tuple[Weights, dict[str, float | int | str]]:
        own = self.load_state("local_model")
        return (own if own is not None else self.initial_weights()), {}

    def after_training(self, trained: Weights) -> Weights:  # noqa: D102
        self.save_state("local_model", trained)
        return []


class LocalStrategy(PersonalizedStrategy):
    """Local training: nothing is exchanged (clients keep their own model in client state)."""

    def download(self, cid: int, server_round: int) -> tuple[Weights, dict[str, int | float | str]]:  # noqa: D102
        return [], {}

    def aggregate(self, server_round: int, uploads: dict[int, Upload]) -> Weights | None:  # noqa: D102
        return None


METHOD = Method(name="local", client=LocalClient, strategy=LocalStrategy)
