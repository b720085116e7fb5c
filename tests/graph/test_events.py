from __future__ import annotations

from spangraph import events as ev


def test_bus_delivers_in_subscription_order_and_only_what_was_asked_for() -> None:
    bus = ev.EventBus()
    assert not bus.listening
    seen: list[tuple[str, str]] = []
    bus.subscribe(lambda e: seen.append(("all", type(e).__name__)))
    stop_finished = bus.subscribe(
        lambda e: seen.append(("finished", type(e).__name__)), only=[ev.NodeFinished]
    )
    bus.subscribe(lambda e: seen.append(("started", type(e).__name__)), only=(ev.NodeStarted,))
    assert bus.listening
    bus.emit(ev.NodeStarted("a", attempt=1))
    bus.emit(ev.NodeFinished("a"))
    bus.emit(ev.NodeQueued("b", kind="block"))
    assert seen == [
        ("all", "NodeStarted"),
        ("started", "NodeStarted"),
        ("all", "NodeFinished"),
        ("finished", "NodeFinished"),
        ("all", "NodeQueued"),
    ]
    seen.clear()
    stop_finished()  # routes are worked out again after an unsubscribe
    bus.emit(ev.NodeFinished("a"))
    assert seen == [("all", "NodeFinished")]


def test_listening_follows_subscriptions() -> None:
    bus = ev.EventBus()
    stop = bus.subscribe(lambda e: None, only=[ev.NodeFinished])
    assert bus.listening
    stop()
    assert not bus.listening
