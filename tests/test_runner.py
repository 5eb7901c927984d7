"""hardware/runner.py: LiteRtPipelinedRunner (one or several replicas per segment) on LiteRT CPU interpreters
and on pure-Python interpreter doubles."""

import collections
import gc
import logging
import random
import re
import subprocess
import sys
import threading
import time
import types

import crafting
import fake_edgetpu
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from fake_edgetpu import LOST_DEVICE_MESSAGE, FaultyInterpreter, faulty_factory
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

import hardware.coral
from hardware.devices import CoralError
from hardware.runner import (
    INTERNAL_QUEUE_SIZE,
    INVOKE_TIMEOUT_ENV,
    INVOKE_TIMEOUT_FACTOR,
    INVOKE_TIMEOUT_FLOOR_S,
    LiteRtPipelinedRunner,
    _invoke_limits,
    _limit,
    unwrap,
    watch,
)
from respect_pass.partition import partition
from respect_pass.run_pipeline import main as run_pipeline_main
from tflite_io.verify import random_inputs


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    """The embedded model's 3 (uncompiled) segment files, one per TPU, partitioned once for the module."""
    return list(partition(crafting.EMBEDDED, 3, tmp_path_factory.mktemp("seg"), replicas=False).segment_paths)


def cpu(path):
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def feeds(interpreter, n, seed=0):
    rng = np.random.default_rng(seed)
    return [random_inputs(interpreter.get_input_details(), rng) for _ in range(n)]


def chain(paths, feed):
    """Reference: fresh interpreters invoked one after the other, inputs bound by name."""
    env = dict(feed)
    for it in map(cpu, paths):
        for d in it.get_input_details():
            it.set_tensor(d["index"], env[d["name"]])
        it.invoke()
        for d in it.get_output_details():
            env[d["name"]] = it.get_tensor(d["index"])
    return env


class Proxy:
    """An interpreter whose invoke() can be counted, held at a gate, or made to fail on its n-th call."""

    def __init__(self, inner, gate=None, fail_on=None):
        self.inner, self.gate, self.fail_on, self.calls = inner, gate, fail_on, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def invoke_before(self):
        """Count the call, fail on the chosen one, wait at the gate."""
        self.calls += 1
        if self.fail_on == self.calls:
            raise RuntimeError("boom")
        if self.gate is not None:
            self.gate.wait()

    def invoke(self):
        self.invoke_before()
        self.inner.invoke()


def settle(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)
    time.sleep(0.1)  # and give a wrong implementation time to overshoot


def test_bit_exact_with_sequential_chaining_and_in_order(segments):
    its = [cpu(p) for p in segments]
    requests = feeds(its[0], 12)
    out_name = its[-1].get_output_details()[0]["name"]
    with LiteRtPipelinedRunner(its) as runner:
        for r in requests:
            runner.push(r)
        runner.push({})
        results = []
        while (out := runner.pop(timeout_s=30)) is not None:
            results.append(out)
        assert runner.pop() is None
    assert len(results) == 12
    for r, out in zip(requests, results):
        assert set(out) == {out_name}
        assert np.array_equal(out[out_name], chain(segments, r)[out_name])
    assert not np.array_equal(results[0][out_name], results[1][out_name])  # the requests really differ


def test_internal_queues_hold_one_request(segments):
    gate = threading.Event()
    first = Proxy(cpu(segments[0]))
    middle = Proxy(cpu(segments[1]), gate=gate)
    runner = LiteRtPipelinedRunner([first, middle, cpu(segments[2])])
    try:
        requests = feeds(first, 10)
        for r in requests:
            runner.push(r)  # the input queue is unbounded: never blocks
        # segment 1 holds request 0, queue 1 holds request 1, segment 0 holds request 2 and waits
        settle(lambda: first.calls >= 3)
        assert (first.calls, middle.calls) == (3, 1)
        assert INTERNAL_QUEUE_SIZE == 1 and runner.queue_peaks()[1] == 1
        assert runner.queue_peaks()[0] >= 7
        gate.set()
        outs = [runner.pop(timeout_s=30) for _ in requests]
        name = next(iter(outs[0]))
        assert all(np.array_equal(o[name], chain(segments, r)[name]) for o, r in zip(outs, requests))
        assert max(runner.queue_peaks()[1:-1]) == 1
    finally:
        gate.set()
        runner.close()


def test_input_queue_can_be_bounded(segments):
    gate = threading.Event()
    first = Proxy(cpu(segments[0]))
    runner = LiteRtPipelinedRunner([first, Proxy(cpu(segments[1]), gate=gate), cpu(segments[2])])
    runner.set_input_queue_size(1)
    requests = feeds(first, 8)
    done = []

    def produce():
        for r in requests:
            runner.push(r)
            done.append(1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        settle(lambda: len(done) >= 4)
        assert len(done) == 4  # stage 1, queue 1, stage 0 and the one-place input queue are full
        gate.set()
        assert all(runner.pop(timeout_s=30) is not None for _ in requests)
        producer.join(5)
        assert not producer.is_alive()
    finally:
        gate.set()
        runner.close()


def test_end_of_stream(segments):
    its = [cpu(p) for p in segments]
    runner = LiteRtPipelinedRunner(its)
    for r in feeds(its[0], 3):
        runner.push(r)
    runner.push({})
    with pytest.raises(CoralError, match=r"after push\(\{\}\) ended the stream"):
        runner.push(feeds(its[0], 1)[0])
    assert [runner.pop(timeout_s=30) is not None for _ in range(3)] == [True] * 3
    assert runner.pop(timeout_s=5) is None and runner.pop(timeout_s=5) is None
    settle(lambda: not runner.running)  # the stages end by themselves once drained
    runner.close()


@pytest.mark.parametrize("failing", [1, 2])
def test_error_in_a_stage_surfaces_and_stops_everything(segments, failing):
    its = [Proxy(cpu(p)) for p in segments]
    its[failing].fail_on = 2
    runner = LiteRtPipelinedRunner(its, names=[f"segment {i} ({p.name})" for i, p in enumerate(segments)])
    for r in feeds(its[0], 10):
        runner.push(r)
    with pytest.raises(CoralError) as info:
        for _ in range(10):
            runner.pop(timeout_s=30)
    message = str(info.value)
    assert f"segment {failing} ({segments[failing].name}) failed in the pipeline (RuntimeError: boom)" in message
    assert "\n" not in message
    assert not runner.running  # every stage thread joined, none left blocked on a full queue
    with pytest.raises(CoralError, match=f"segment {failing}"):
        runner.push(feeds(its[0], 1)[0])


def test_close_is_idempotent_and_drops_what_is_in_flight(segments, caplog, capfd):
    its = [cpu(p) for p in segments]
    with LiteRtPipelinedRunner(its) as runner:
        for r in feeds(its[0], 4):
            runner.push(r)
    assert not runner.running
    runner.close()
    runner.close()
    assert runner.pop() is None
    with pytest.raises(CoralError, match="closed pipeline"):
        runner.push(feeds(its[0], 1)[0])
    assert capfd.readouterr().out == ""


def test_deleting_a_running_runner_stops_its_threads(segments):
    its = [cpu(p) for p in segments]
    runner = LiteRtPipelinedRunner(its)
    runner.push(feeds(its[0], 1)[0])
    threads = [t for t in threading.enumerate() if t.name.startswith("respect-pass-stage-")]
    assert len(threads) == 3
    del runner
    gc.collect()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


def test_records_invoke_times_per_stage(segments):
    its = [cpu(p) for p in segments]
    with LiteRtPipelinedRunner(its) as runner:
        for r in feeds(its[0], 5):
            runner.push(r)
            runner.pop(timeout_s=30)
        times = runner.stage_times_s()
        assert [len(t) for t in times] == [5, 5, 5] and all(s > 0 for t in times for s in t)
        runner.reset_stage_times()
        assert runner.stage_times_s() == [[], [], []]


class Fake:
    """A pure-Python interpreter: named int32 tensors, ``fn(inputs) -> outputs`` on invoke()."""

    def __init__(self, inputs, outputs, fn):
        self.ins, self.outs, self.fn, self.tensors = inputs, outputs, fn, {}
        self.index = {n: i for i, n in enumerate(inputs + outputs)}

    def _details(self, names):
        return [{"name": n, "index": self.index[n], "shape": np.array([2]), "dtype": np.int32} for n in names]

    def get_input_details(self):
        return self._details(self.ins)

    def get_output_details(self):
        return self._details(self.outs)

    def set_tensor(self, index, value):
        self.tensors[index] = np.array(value)

    def invoke(self):
        got = self.fn(*(self.tensors[self.index[n]] for n in self.ins))
        for n, v in zip(self.outs, got if isinstance(got, tuple) else (got,)):
            self.tensors[self.index[n]] = v

    def get_tensor(self, index):
        return self.tensors[index]


def test_binding_by_name_forwards_model_inputs_and_returns_the_last_outputs():
    segs = [
        Fake(["x"], ["a"], lambda x: x + 1),
        Fake(["a"], ["b"], lambda a: a * 10),
        Fake(["b", "x"], ["y"], lambda b, x: b - x),
    ]  # x skips two segments
    with LiteRtPipelinedRunner(segs) as runner:
        runner.push({"x": np.array([1, 2], np.int32)})
        out = runner.pop(timeout_s=10)
    assert set(out) == {"y"} and out["y"].tolist() == [19, 28]


def test_binding_rules_are_libcoral_s():
    with pytest.raises(CoralError, match="segment 1 reads 'b', which is neither a model input nor an output"):
        LiteRtPipelinedRunner([Fake(["x"], ["a"], None), Fake(["b"], ["y"], None), Fake(["a"], ["b"], None)])
    with pytest.raises(CoralError, match="segment 0 outputs 'c', which no later segment reads"):
        LiteRtPipelinedRunner([Fake(["x"], ["a", "c"], None), Fake(["a"], ["y"], None)])
    with pytest.raises(CoralError, match="at least one segment"):
        LiteRtPipelinedRunner([])


def test_push_checks_names_and_types():
    with LiteRtPipelinedRunner([Fake(["x"], ["y"], lambda x: x)]) as runner:
        with pytest.raises(CoralError, match=r"got tensors \['z'\] but the model inputs are \['x'\]"):
            runner.push({"z": np.zeros(2, np.int32)})
        with pytest.raises(CoralError, match="must be int32 with 2 elements, got float32"):
            runner.push({"x": np.zeros(2, np.float32)})
        with pytest.raises(CoralError, match="takes a dict"):
            runner.push([np.zeros(2, np.int32)])
        with pytest.raises(CoralError, match="no pipeline result within"):
            runner.pop(timeout_s=0.05)


# ----------------------------------------------------------------- replicas


class Jittery(Proxy):
    """A :class:`Proxy` whose invoke() also sleeps a seeded random 0-5 ms (so replicas finish out of order)
    and logs each result (as bytes) to ``done`` in completion order."""

    def __init__(self, inner, seed, fail_on=None, done=None, gate=None):
        super().__init__(inner, gate=gate, fail_on=fail_on)
        self.rng, self.done = random.Random(seed), done

    def invoke(self):
        super().invoke_before()
        time.sleep(self.rng.uniform(0, 0.005))
        self.inner.invoke()
        if self.done is not None:
            self.done.append(self.inner.get_tensor(self.inner.get_output_details()[0]["index"]).tobytes())


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """The embedded model's 2 (uncompiled) segment files."""
    return list(partition(crafting.EMBEDDED, 2, tmp_path_factory.mktemp("halves"), replicas=False).segment_paths)


def full_model(feed):
    """Reference: the whole (unsplit) model on the CPU."""
    it = cpu(crafting.EMBEDDED)
    for d in it.get_input_details():
        it.set_tensor(d["index"], feed[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


def replicated(paths, replicas, seed=0, **kw):
    """Per segment, ``replicas[s]`` jittery CPU interpreters of ``paths[s]`` (each seeded differently)."""
    return [[Jittery(cpu(p), seed + 10 * s + j, **kw) for j in range(r)] for s, (p, r) in enumerate(zip(paths, replicas))]


def stage_threads():
    return [t for t in threading.enumerate() if t.name.startswith("respect-pass-stage-")]


@settings(max_examples=examples(10), deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 30))
def test_replicas_bit_exact_and_in_request_order(halves, seed, n):
    done = []
    stages = replicated(halves, [2, 3], seed)
    for it in stages[1]:
        it.done = done
    requests = feeds(stages[0][0], n, seed)
    with LiteRtPipelinedRunner(stages) as runner:
        assert runner.replicas() == [2, 3] and len(runner.interpreters()) == 5 and len(stage_threads()) == 5
        for r in requests:
            runner.push(r)
        runner.push({})
        results = [runner.pop(timeout_s=30) for _ in requests]
        assert runner.pop(timeout_s=5) is None
        assert max(runner.queue_peaks()[1:-1]) <= INTERNAL_QUEUE_SIZE
        times = runner.replica_times_s()
        assert [len(t) for t in runner.stage_times_s()] == [n, n] and [sum(map(len, s)) for s in times] == [n, n]
    name = next(iter(results[0]))
    for r, out in zip(requests, results):
        assert np.array_equal(out[name], full_model(r)[name])
    assert sorted(done) == sorted(out[name].tobytes() for out in results)


def test_replicas_finish_out_of_order_and_pop_reorders(halves):
    done = []
    stages = replicated(halves, [2, 3], seed=7)
    for it in stages[1]:
        it.done = done
    requests = feeds(stages[0][0], 40, seed=3)
    with LiteRtPipelinedRunner(stages) as runner:
        for r in requests:
            runner.push(r)
        results = [runner.pop(timeout_s=30) for _ in requests]
        assert all(len(t) > 0 for stage in runner.replica_times_s() for t in stage)  # every replica worked
    name = next(iter(results[0]))
    assert [out[name].tobytes() for out in results] == [chain(halves, r)[name].tobytes() for r in requests]
    assert done != [out[name].tobytes() for out in results]  # the last stage finished them out of order


def test_a_plain_list_and_a_list_of_lists_mix(segments):
    its = [cpu(segments[0]), [cpu(segments[1]), cpu(segments[1])], (cpu(segments[2]),)]
    requests = feeds(its[0], 6)
    with LiteRtPipelinedRunner(its) as runner:
        assert runner.replicas() == [1, 2, 1]
        for r in requests:
            runner.push(r)
        outs = [runner.pop(timeout_s=30) for _ in requests]
    name = next(iter(outs[0]))
    assert all(np.array_equal(o[name], chain(segments, r)[name]) for o, r in zip(outs, requests))


def test_replica_error_stops_everything_and_joins_every_thread(halves):
    before = threading.active_count()
    stages = replicated(halves, [2, 3], seed=1)
    stages[1][1].fail_on = 2
    requests = feeds(stages[0][0], 30)
    runner = LiteRtPipelinedRunner(stages, names=["first", "second"])
    for r in requests:
        runner.push(r)
    popped = []
    with pytest.raises(CoralError) as info:
        for _ in requests:
            popped.append(runner.pop(timeout_s=30))
    message = str(info.value)
    assert re.fullmatch(
        r"second replica 1 failed in the pipeline \(RuntimeError: boom\) on request \d+; "
        "the other stages were stopped and joined",
        message,
    )
    assert not runner.running and threading.active_count() == before
    assert len(popped) < len(requests)  # results after the failure are never handed out
    name = next(iter(popped[0])) if popped else None
    assert all(np.array_equal(o[name], chain(halves, r)[name]) for o, r in zip(popped, requests))
    for call in (lambda: runner.pop(timeout_s=1), lambda: runner.push(requests[0])):
        with pytest.raises(CoralError, match="^second replica 1 failed in the pipeline"):
            call()
    runner.close()


def test_a_hung_replica_times_out_pop_without_blocking_the_others(halves):
    gate = threading.Event()
    stages = replicated(halves, [1, 2])
    stages[1][0].gate = gate
    requests = feeds(stages[0][0], 6)
    runner = LiteRtPipelinedRunner(stages, request_timeout_s=0.3)
    try:
        for r in requests:
            runner.push(r)
        outs = []
        with pytest.raises(CoralError) as info:
            for _ in requests:
                outs.append(runner.pop())
        message = str(info.value)
        assert message.startswith(f"no pipeline result within 0.3 s: request {len(outs)} has been in segment 1 replica 0")
        assert message.endswith("(a hung invoke()?)") and "\n" not in message
        assert stages[1][1].calls >= 4  # the other replica went on with the later requests
        gate.set()
        outs += [runner.pop() for _ in range(len(requests) - len(outs))]
        name = next(iter(outs[0]))
        assert [o[name].tobytes() for o in outs] == [chain(halves, r)[name].tobytes() for r in requests]
    finally:
        gate.set()
        runner.close()


def test_pop_timeout_says_when_nothing_is_in_flight():
    with LiteRtPipelinedRunner([Fake(["x"], ["y"], lambda x: x)], request_timeout_s=0.05) as runner:
        with pytest.raises(CoralError, match=r"within 0.05 s: every request pushed was popped"):
            runner.pop()


def test_end_of_stream_and_close_with_replicas(halves):
    before = threading.active_count()
    stages = replicated(halves, [3, 2])
    runner = LiteRtPipelinedRunner(stages)
    assert threading.active_count() == before + 6  # 5 replicas and the watchdog
    for r in feeds(stages[0][0], 7):
        runner.push(r)
    runner.push({})
    assert all(runner.pop(timeout_s=30) is not None for _ in range(7)) and runner.pop(timeout_s=5) is None
    settle(lambda: not runner.running)  # each stage ends once all its replicas saw the end
    runner.close()
    assert threading.active_count() == before
    dropped = LiteRtPipelinedRunner(replicated(halves, [2, 2]))
    dropped.push(feeds(stages[0][0], 1)[0])
    del dropped
    gc.collect()
    settle(lambda: threading.active_count() == before)


def test_replicas_must_be_the_same_segment(segments):
    with pytest.raises(CoralError, match="segment 1 replica 1 has other inputs or outputs than segment 1 replica 0"):
        LiteRtPipelinedRunner([cpu(segments[0]), [cpu(segments[1]), cpu(segments[2])], cpu(segments[2])])
    with pytest.raises(CoralError, match="segment 1 has no interpreter"):
        LiteRtPipelinedRunner([cpu(segments[0]), [], cpu(segments[2])])
    it = cpu(segments[1])
    with pytest.raises(CoralError, match="the same interpreter is given twice"):
        LiteRtPipelinedRunner([cpu(segments[0]), [it, it], cpu(segments[2])])
    with pytest.raises(CoralError, match=r"replica names for \[1, 1\] replicas, not \[1, 2\]"):
        LiteRtPipelinedRunner(
            [Fake(["x"], ["a"], None), [Fake(["a"], ["y"], None)] * 1 + [Fake(["a"], ["y"], None)]],
            replica_names=[["a"], ["b"]],
        )


# ----------------------------------------------------------------- faults: one line, every thread joined or abandoned


def runner_threads():
    return [t for t in threading.enumerate() if t.name.startswith("respect-pass-")]


def threads():
    """Every thread but tqdm's monitor (tqdm starts it once, for good)."""
    return {t for t in threading.enumerate() if t.name != "tqdm_monitor"}


def faulty_pipeline(segments, fault, at=8):
    """The 3 segments on usb:0..2 (as run_coral names them), segment 1's ``at``-th invoke faulting."""
    its = [FaultyInterpreter(cpu(p), f"usb:{i}") for i, p in enumerate(segments)]
    its[1].fault, its[1].at = fault, at
    names = [f"segment {i} ({p.name})" for i, p in enumerate(segments)]
    return its, names


def run_until_error(runner, requests):
    popped = []
    for r in requests:
        runner.push(r)
    with pytest.raises(CoralError) as info:
        for _ in requests:
            popped.append(runner.pop())
    return str(info.value), popped


@pytest.mark.parametrize("fault", ["raise", "lose"])
def test_a_stage_that_raises_or_loses_its_device_stops_and_joins_everything(segments, fault):
    before = threads()
    its, names = faulty_pipeline(segments, fault)
    watched = [watch(it, f"{p.name} on {it.device}", it.device) for it, p in zip(its, segments)]  # as run_coral does
    runner = LiteRtPipelinedRunner(watched, names, replica_names=[["on usb:0"], ["on usb:1"], ["on usb:2"]])
    assert runner.running and len(runner_threads()) == 4  # 3 stages and the watchdog
    message, popped = run_until_error(runner, feeds(its[0], 50))
    where = f"segment 1 ({segments[1].name}) on usb:1"
    if fault == "raise":
        assert message == (
            f"{where} failed in the pipeline (RuntimeError: injected fault on invoke 8) on request 7; "
            "the other stages were stopped and joined"
        )
    else:
        assert message == (
            f"{where} lost its Edge TPU on request 7 (RuntimeError: {' '.join(LOST_DEVICE_MESSAGE.split())}); "
            "check the cable and power of usb:1 and 'respect-pass devices'; the other stages were stopped and joined"
        )
    assert "\n" not in message and len(popped) <= 7
    assert threads() == before and runner_threads() == [] and runner.abandoned() == []
    with pytest.raises(CoralError, match=f"^{re.escape(where)}"):
        runner.push(feeds(its[0], 1)[0])  # the same line again, nothing else runs
    runner.close()


def test_a_hung_stage_is_abandoned_and_the_others_joined(segments):
    before = threads()
    its, names = faulty_pipeline(segments, "hang")
    runner = LiteRtPipelinedRunner(its, names, devices=[["usb:0"], ["usb:1"], ["usb:2"]], invoke_timeout_s=0.3)
    try:
        t0 = time.monotonic()
        message, popped = run_until_error(runner, feeds(its[0], 50))
        assert time.monotonic() - t0 < 5  # the watchdog's 0.3 s, not a pop timeout or a 30 s join
        assert its[1].hanging.is_set() and len(popped) <= 7
        assert message == (
            f"segment 1 ({segments[1].name}) hung on request 7: no result from invoke() within 0.3 s "
            "(is usb:1 still connected? see 'respect-pass devices'); its thread is abandoned "
            "(a daemon: it does not hold up exit) and the other stages were stopped and joined"
        )
        left = runner_threads()
        assert [t.name for t in left] == ["respect-pass-stage-1"] and left[0].daemon
        assert runner.abandoned() == [f"segment 1 ({segments[1].name})"]
        assert threads() - before == set(left)
    finally:
        its[1].release.set()
    left[0].join(5)  # released, the invoke returns and the thread ends by itself
    assert runner_threads() == [] and threads() == before
    runner.close()


def test_the_default_invoke_timeout_is_generous_and_the_environment_sets_it(monkeypatch):
    assert (INVOKE_TIMEOUT_FLOOR_S, INVOKE_TIMEOUT_FACTOR) == (10.0, 100.0)
    assert _limit(None, collections.deque()) == 10.0
    assert _limit(None, collections.deque([0.001, 0.002, 0.5])) == 10.0
    assert _limit(None, collections.deque([0.2, 0.3, 0.4])) == pytest.approx(30.0)
    assert _limit(0.5, collections.deque([1.0])) == 0.5
    monkeypatch.delenv(INVOKE_TIMEOUT_ENV, raising=False)
    assert _invoke_limits(None, 2) == [None, None]
    assert _invoke_limits([1, 2], 2) == [1.0, 2.0]
    monkeypatch.setenv(INVOKE_TIMEOUT_ENV, "0.25")
    assert _invoke_limits(None, 2) == [0.25, 0.25] and _invoke_limits(3, 2) == [3.0, 3.0]
    monkeypatch.setenv(INVOKE_TIMEOUT_ENV, "soon")
    with pytest.raises(CoralError, match="RESPECT_PASS_INVOKE_TIMEOUT_S='soon' is not a number of seconds"):
        LiteRtPipelinedRunner([Fake(["x"], ["y"], lambda x: x)])
    with pytest.raises(CoralError, match="invoke timeouts must be 1 positive"):
        LiteRtPipelinedRunner([Fake(["x"], ["y"], lambda x: x)], invoke_timeout_s=0)
    assert runner_threads() == []


def test_a_watched_interpreter_names_its_device_outside_the_pipeline(segments):
    watched = watch(FaultyInterpreter(cpu(segments[0]), "usb:3", "lose", 2), "x.tflite on usb:3", "usb:3")
    assert watch(watched, "again") is watched and unwrap(watched) is watched.inner
    watched.invoke()
    with pytest.raises(CoralError) as info:
        watched.invoke()
    assert str(info.value) == (
        f"x.tflite on usb:3 lost its Edge TPU on invoke 2, outside the pipeline (RuntimeError: "
        f"{' '.join(LOST_DEVICE_MESSAGE.split())}); check the cable and power of usb:3 and 'respect-pass devices'; "
        "nothing was measured"
    )
    plain = watch(FaultyInterpreter(cpu(segments[0]), "usb:3", "raise", 1), "x.tflite on usb:3", "usb:3")
    with pytest.raises(CoralError, match=r"^x.tflite on usb:3 failed \(RuntimeError: injected fault on invoke 1\) on"):
        plain.invoke()


# ----------------------------------------------------------------- faults through run_pipeline --backend coral


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The embedded model in 3 segments, "compiled" by the fake edgetpu_compiler (with plan.json)."""
    root = tmp_path_factory.mktemp("coral")
    fake_edgetpu.compile_embedded(root, 3)
    return root / "seg"


@pytest.mark.parametrize(
    ("fault", "pipeline_only", "expected"),
    [
        ("raise", True, r"segment 1 \(\S+_segment_1_of_3_edgetpu.tflite\) on usb:1 failed in the pipeline "),
        ("lose", True, r"segment 1 \(\S+\) on usb:1 lost its Edge TPU on request 7 .*check the cable and power of usb:1"),
        ("hang", True, r"segment 1 \(\S+\) on usb:1 hung on request 7: no result from invoke\(\) within 0.4 s"),
        ("raise", False, r"\S+_segment_1_of_3_edgetpu.tflite on usb:1 failed \(RuntimeError: injected fault on invoke 8"),
        ("lose", False, r"\S+_segment_1_of_3_edgetpu.tflite on usb:1 lost its Edge TPU on invoke 8, outside the pipe"),
    ],
)
def test_run_pipeline_coral_fault_is_one_line_exit_2_and_no_output(
    compiled, tmp_path, monkeypatch, capsys, caplog, fault, pipeline_only, expected
):
    """A fault at the 8th invoke of segment 1's TPU (request 7 of 50 in the pipeline, or in run_coral's
    one-by-one passes): one stderr line, exit 2, nothing on stdout, no plot, every runner thread ended."""
    before = threads()
    made = []
    factory = faulty_factory(lambda path, device: cpu(path), {"usb:1": (fault, 8)}, pipeline_only=pipeline_only, made=made)
    monkeypatch.setattr(hardware.coral, "make_edgetpu_interpreter", factory)
    monkeypatch.setattr(hardware.coral, "require_edgetpu_runtime", lambda library="": None)
    monkeypatch.setattr(  # the runtime probe (a child process) needs a real libedgetpu
        hardware.coral, "probe_runtime", lambda *a, **k: types.SimpleNamespace(runtime=None), raising=False
    )
    monkeypatch.setenv(INVOKE_TIMEOUT_ENV, "0.4")
    plot = tmp_path / "stages.png"
    argv = [str(compiled), "--backend", "coral", "--runner", "litert", "--devices", "usb:0,usb:1,usb:2"]
    t0 = time.monotonic()
    try:
        code = run_pipeline_main([*argv, "--count", "50", "--warmup", "1", "--json", "--plot", str(plot)])
        assert time.monotonic() - t0 < 30
    finally:
        for it in made:
            it.release.set()
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not plot.exists() and list(tmp_path.iterdir()) == []
    assert err.count("\n") == 1 and err.startswith("run_pipeline: error: "), err
    assert re.match(expected, err.removeprefix("run_pipeline: error: ")), err
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == []  # run_pipeline has no log handler: a warning would be a second stderr line
    for t in runner_threads():  # a hung invoke returns once released; nothing else may be left
        t.join(5)
    assert runner_threads() == [] and threads() == before


def test_an_abandoned_thread_does_not_hold_up_the_process_exit():
    script = (
        "import threading, numpy as np, sys; sys.path.insert(0, 'tests')\n"
        "from test_runner import Fake\n"
        "from hardware.runner import LiteRtPipelinedRunner\n"
        "forever = threading.Event()\n"
        "r = LiteRtPipelinedRunner([Fake(['x'], ['y'], lambda x: forever.wait())], invoke_timeout_s=0.2)\n"
        "r.push({'x': np.zeros(2, np.int32)})\n"
        "try:\n    r.pop()\nexcept Exception as exc:\n    print(exc)\n"
    )
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and time.monotonic() - t0 < 30, done.stderr
    assert done.stdout.startswith("segment 0 hung on request 0: no result from invoke() within 0.2 s; its thread is")
