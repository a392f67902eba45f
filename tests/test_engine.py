"""The workaround for Flower's per-node polling (fedfomo.engine): same answers, idle nodes skipped."""

from __future__ import annotations

import threading
from importlib.metadata import version
from types import SimpleNamespace

from fedfomo import engine


def _state(*messages):
    return SimpleNamespace(lock=threading.RLock(),
                           message_ins_store={f"m{i}": SimpleNamespace(metadata=SimpleNamespace(
                               dst_node_id=node, delivered_at=delivered)) for i, (node, delivered) in
                               enumerate(messages)})


def test_idle_nodes_are_answered_without_flowers_scan_and_others_by_it():
    calls = []

    def flowers(self, node_id, limit, *, run_id=None):
        calls.append((node_id, limit, run_id))
        return [f"message for {node_id}"]

    get = engine.skip_idle_nodes(flowers)
    state = _state((5, ""), (6, "2026-11-26T18:00:00"))  # node 6's message is already delivered
    assert get(state, 7, 1) == [] and get(state, 6, 1) == [] and calls == []
    assert get(state, 5, 1, run_id=3) == ["message for 5"] and calls == [(5, 1, 3)]
    assert engine.has_undelivered(state, 5) and not engine.has_undelivered(_state(), 5)


def test_install_wraps_flowers_linkstate_once():
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    original = InMemoryLinkState.get_message_ins
    try:
        if not version("flwr").startswith(engine.CHECKED_VERSIONS):  # another Flower: nothing is changed
            assert not engine.install() and InMemoryLinkState.get_message_ins is original
            return
        assert engine.install() and engine.install()
        wrapped = InMemoryLinkState.get_message_ins
        assert wrapped.fedfomo_skip_idle_nodes and wrapped.__wrapped__ is original  # wrapped once, not twice
    finally:
        InMemoryLinkState.get_message_ins = original
