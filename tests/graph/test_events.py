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


def test_work_only_listeners_get_no_event_about_a_pure_node() -> None:
    bus = ev.EventBus()
    everything: list[str] = []
    work: list[str] = []
    bus.subscribe(lambda e: everything.append(e.node_id))
    bus.subscribe(lambda e: work.append(e.node_id), work_only=True)
    bus.emit(ev.NodeFinished("gen"))
    bus.emit_pure(ev.NodeFinished("block"))
    assert everything == ["gen", "block"] and work == ["gen"]
    finished_pure = bus.emitter(ev.NodeFinished, pure=True)
    assert finished_pure is not None and finished_pure != bus.emitter(ev.NodeFinished)
    only_work = ev.EventBus()
    only_work.subscribe(lambda e: None, work_only=True)
    assert only_work.emitter(ev.NodeFinished, pure=True) is None  # nothing is built for it


def test_a_run_reports_pure_nodes_to_all_but_work_only_listeners() -> None:
    """Through a whole run, with a failure: every node's events reach a plain listener;
    a work_only one sees the same events less those about blocks and components."""
    import anyio

    from spangraph import CBlock, compile, generate
    from spangraph.engines import ScriptedEngine
    from spangraph.graph import RetryPolicy
    from spangraph.graph._scheduler import Scheduler
    from spangraph.nodes import Component, Span

    class Pair(Component[str]):
        template = "{a} {b}"
        a: Span
        b: Span

    def reply(prompt: str) -> str:
        if "boom" in prompt:
            raise ValueError("boom")
        return prompt.upper()

    first = generate(Pair(a=CBlock("x"), b=CBlock("y")))
    last = generate(Pair(a=first, b=generate(CBlock("boom"))))
    graph = compile(last)
    bus = ev.EventBus()
    everything: list[ev.Event] = []
    work: list[ev.Event] = []
    bus.subscribe(everything.append)
    bus.subscribe(work.append, work_only=True)
    engine = ScriptedEngine(reply)
    scheduler = Scheduler(
        graph,
        engine=lambda: engine,
        max_concurrency=None,
        retry=RetryPolicy(attempts=1),
        timeout=None,
        on_error="continue",
        bus=bus,
    )
    anyio.run(scheduler.execute)
    pure = {n for n in graph if graph.node(n).kind in ("block", "component")}
    kinds = {(type(e).__name__, e.node_id in pure) for e in everything}
    # pure nodes were queued, finished (the blocks) and skipped (the last Pair)
    assert {("NodeQueued", True), ("NodeFinished", True), ("NodeSkipped", True)} <= kinds
    assert ("NodeFailed", False) in kinds
    assert [e for e in everything if e.node_id not in pure] == work


def test_a_listener_subscribed_after_the_scheduler_is_made_gets_every_event() -> None:
    """The scheduler binds its emitters when the run starts, not when it is built."""
    import anyio

    from spangraph import CBlock, compile, generate
    from spangraph.engines import ScriptedEngine
    from spangraph.graph._policy import RetryPolicy
    from spangraph.graph._scheduler import Scheduler

    engine = ScriptedEngine("ok")
    bus = ev.EventBus()
    early: list[str] = []
    bus.subscribe(lambda e: early.append(type(e).__name__), only=[ev.NodeStarted])
    scheduler = Scheduler(
        compile(generate(CBlock("q"))),
        engine=lambda: engine,
        max_concurrency=None,
        retry=RetryPolicy(),
        timeout=None,
        on_error="raise",
        bus=bus,
    )
    late: list[str] = []
    bus.subscribe(lambda e: late.append(type(e).__name__))  # after the scheduler was made
    anyio.run(scheduler.execute)
    assert early == ["NodeStarted"]
    assert late.count("NodeQueued") == 2  # the block and the generation
    assert late.count("NodeStarted") == 1 and late.count("NodeFinished") == 2
