"""A workaround for the cost of Flower's simulation engine polling every node (issue 12).

Flower's simulation engine (``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``,
flwr 1.42) asks the in-memory LinkState for each node's next message ten times a second:
``InMemoryLinkState.get_message_ins(node_id)`` for every one of the N nodes, and each call
validates every stored message (a lock, a timestamp, a federation check) before it compares the
destination. With 1000 simulated clients that is 10,000 calls a second, each scanning the few
messages in flight: measured with py-spy on this project's 1000-client benchmark, two thirds of
the server process's CPU (about 3.3 CPU-seconds per round on the 2-core development machine,
taken from the two workers that train).

:func:`install` wraps ``get_message_ins`` so that a node with no undelivered message is answered
by one scan of the stored messages' destinations, without the validation; a node with one is
served by Flower's own method, unchanged (which still validates, and so deletes expired or
invalid messages, as before). What reaches each node, and when, is the same. The wrapper is
installed only in a simulation and only on the Flower version it was measured on; elsewhere
nothing changes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.common import Message
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

log = logging.getLogger("fedfomo")

#: Flower versions whose ``InMemoryLinkState.get_message_ins`` the wrapper was checked against
CHECKED_VERSIONS = ("1.42.",)


def has_undelivered(state: InMemoryLinkState, node_id: int) -> bool:
    """Whether ``state`` (an ``InMemoryLinkState``) stores a message for ``node_id`` not yet delivered.

    Parameters
    ----------
    state : InMemoryLinkState
        Flower's in-memory LinkState (its ``lock`` and ``message_ins_store``).
    node_id : int
        The destination node.

    Returns
    -------
    bool
        True when Flower's ``get_message_ins`` could return a message for the node.

    """
    with state.lock:
        return any(m.metadata.dst_node_id == node_id and m.metadata.delivered_at == ""
                   for m in state.message_ins_store.values())


def skip_idle_nodes(get_message_ins: Callable[..., list[Message]]) -> Callable[..., list[Message]]:
    """Wrap ``InMemoryLinkState.get_message_ins``: ``[]`` at once for a node with nothing undelivered."""
    @functools.wraps(get_message_ins)
    def wrapper(self: InMemoryLinkState, node_id: int, limit: int | None, *,
                run_id: int | None = None) -> list[Message]:
        if not has_undelivered(self, node_id):
            return []
        return get_message_ins(self, node_id, limit, run_id=run_id)

    wrapper.fedfomo_skip_idle_nodes = True  # type: ignore[attr-defined]
    return wrapper


def install() -> bool:
    """Install :func:`skip_idle_nodes` on Flower's ``InMemoryLinkState`` (once; simulations only).

    Returns
    -------
    bool
        True when the wrapper is in place, False when this Flower version was not checked (nothing
        is changed, a line is logged).

    """
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    current = InMemoryLinkState.get_message_ins
    if getattr(current, "fedfomo_skip_idle_nodes", False):
        return True
    flwr_version = version("flwr")
    if not flwr_version.startswith(CHECKED_VERSIONS):
        log.info("flwr %s: the engine's per-node polling is left as it is (checked on %s)", flwr_version,
                 ", ".join(v + "x" for v in CHECKED_VERSIONS))
        return False
    InMemoryLinkState.get_message_ins = skip_idle_nodes(current)
    return True
