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


def test_emitter_is_none_for_a_type_nobody_takes() -> None:
    bus = ev.EventBus()
    assert bus.emitter(ev.NodeQueued) is None and not bus.records

    def listener(event: ev.Event) -> None:
        return None

    stop = bus.subscribe(listener, only=[ev.NodeFinished])
    assert bus.emitter(ev.NodeQueued) is None
    assert bus.emitter(ev.NodeFinished) is listener  # a sole listener is called directly
    stop_all = bus.subscribe(lambda e: None)
    assert bus.emitter(ev.NodeFinished) == bus.emit  # several: the fan-out
    stop_all()
    assert not bus.records  # nobody takes GenerationRecords: the protocol builds none
    stop_records = bus.subscribe(listener, only=[ev.GenerationRecord])
    assert bus.records and bus.emit_record is listener
    stop_records()
    stop()
    assert not bus.records and bus.emit_record is None
    assert bus.emitter(ev.NodeFinished) is None


def test_a_run_builds_only_the_events_someone_takes() -> None:
    from spangraph import CBlock, generate, run
    from spangraph.engines import ScriptedEngine

    started: list[ev.Event] = []
    thunk = generate(CBlock("q"))
    result = run(
        thunk,
        engine=ScriptedEngine("x"),
        trace=False,
        progress=False,
        listeners=[started.append],
    )
    assert result.events == []  # kept only with keep_events=True
    assert {type(e) for e in started} >= {ev.NodeQueued, ev.NodeStarted, ev.NodeFinished}
    kept = run(generate(CBlock("r")), engine=ScriptedEngine("x"), progress=False, keep_events=True)
    assert [type(e).__name__ for e in kept.events][:2] == ["NodeQueued", "NodeQueued"]


def test_generation_record_fields() -> None:
    """The telemetry step builds its record positionally: each value in its own field."""
    from spangraph import CBlock, generate, options, run
    from spangraph.engines import ScriptedEngine

    records: list[ev.GenerationRecord] = []
    with options(temperature=0.5):
        thunk = generate(CBlock("question"))
    run(
        thunk,
        engine=ScriptedEngine("answer"),
        trace=False,
        progress=False,
        listeners=[lambda e: records.append(e) if isinstance(e, ev.GenerationRecord) else None],
    )
    (record,) = records
    assert record.node_id == thunk.id
    assert (record.engine, record.provider, record.model) == ("scripted", "spangraph", "scripted")
    assert record.mode == "completion" and dict(record.options) == {"temperature": 0.5}
    assert (record.prompt, record.output, record.finish_reason) == ("question", "answer", "stop")
    assert record.usage == thunk.usage and record.timings == thunk.timings
    assert record.cache_hit is False and record.error is None and record.server is None
    assert record.started <= record.time
