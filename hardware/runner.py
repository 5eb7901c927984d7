"""A pipelined runner for S segments on one or more interpreters each that needs only LiteRT (plus libedgetpu).

:class:`LiteRtPipelinedRunner` follows libcoral's ``PipelinedModelRunner``
(github.com/google-coral/libcoral, ``coral/pipeline/pipelined_model_runner.cc``,
``internal/segment_runner.cc``, ``internal/thread_safe_queue.h``) with pycoral
2.x's Python API (``push(dict)``, ``pop() -> dict | None``, ``push({})`` ends
the stream), and adds replicas:

* segment s runs on r_s >= 1 interpreters (replicas of the same compiled
  segment, each on its own Edge TPU), each with its own thread; a plain list
  of interpreters is one replica per segment, as in libcoral;
* all replicas of segment s read queue s and write queue s+1; each request
  goes to whichever replica is free, so to one replica of each segment;
* the S-1 queues between segments hold at most one request (libcoral's
  ``kInternalQueueSize = 1``), so a slow segment stalls the ones before it and
  at most sum(r_s) + S-1 requests are inside the pipeline;
* the input queue (before segment 0) and the output queue (after the last
  segment) are unbounded, as in libcoral, whose callers "are allowed to push
  faster than processing speed of pipeline"; :meth:`set_input_queue_size`
  and :meth:`set_output_queue_size` bound them (``push`` then blocks);
* ``push`` tags each request with a sequence number; replicas may finish out
  of order, and ``pop`` holds early results in a reorder buffer so results
  come back in request order;
* tensors are bound by name: segment i's inputs must be model inputs (segment
  0's inputs) or outputs of segments before i; every output of a segment but
  the last must be read by a later segment (libcoral CHECK-fails otherwise).
  A tensor travels with the request until its last consumer has run, and
  ``pop`` returns the last segment's outputs by name.

Unlike libcoral, ``push({})`` does not wait for the stages (``close`` does).

Faults end the run in one line. An exception in a stage stops the whole
pipeline at once (results in flight, held ones included, are dropped), every
other thread is joined, and the next or pending ``push``/``pop`` raises a
one-line :class:`CoralError` naming the segment, replica, device and request:
``... failed in the pipeline (RuntimeError: ...) on request 7; ...``. An
exception that says the Edge TPU went away (libedgetpu's "USB transfer error",
LiteRT's "failed to invoke", ...) reads ``... lost its Edge TPU usb:1 on request
7 (...); check the cable and power of usb:1 and 'respect-pass devices' ...``.
A watchdog thread stops the pipeline when one ``invoke()`` runs longer than the
stage's invoke timeout: ``invoke_timeout_s`` seconds when given (a number, or
one per segment), else the ``RESPECT_PASS_INVOKE_TIMEOUT_S`` environment
variable, else max(:data:`INVOKE_TIMEOUT_FLOOR_S` = 10 s,
:data:`INVOKE_TIMEOUT_FACTOR` = 100 x the stage's median invoke so far). An
``invoke()`` cannot be interrupted, so the hung thread is abandoned (every
thread is a daemon: it never holds up the process's exit) and the line says so:
``... hung on request 7: no result from invoke() within 10 s; its thread is
abandoned ...``. :func:`watch` gives the same lines for invokes made outside
the pipeline. Each replica records the wall time of every ``invoke()``.
Nothing is ever printed; warnings go to ``logging``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .devices import CoralError

__all__ = [
    "INTERNAL_QUEUE_SIZE",
    "INVOKE_TIMEOUT_ENV",
    "INVOKE_TIMEOUT_FACTOR",
    "INVOKE_TIMEOUT_FLOOR_S",
    "LiteRtPipelinedRunner",
    "WatchedInterpreter",
    "fault_line",
    "unwrap",
    "watch",
]

log = logging.getLogger(__name__)

INTERNAL_QUEUE_SIZE = 1  # libcoral's kInternalQueueSize
#: the invoke timeout is at least this many seconds (an Edge TPU invoke takes milliseconds to a second)
INVOKE_TIMEOUT_FLOOR_S = 10.0
#: ... and this many times the stage's median invoke so far
INVOKE_TIMEOUT_FACTOR = 100.0
#: environment variable: one invoke timeout in seconds for every stage (``inf``: none), overriding the default
INVOKE_TIMEOUT_ENV = "RESPECT_PASS_INVOKE_TIMEOUT_S"
#: what libedgetpu / LiteRT say when an Edge TPU is gone or its link broke
_DEVICE_LOST = re.compile(
    r"failed to invoke|usb transfer error|libusb_error|no such device|error in device opening|"
    r"device (?:is |was )?(?:disconnected|removed|lost|gone|not found)|could not (?:open|find) (?:the )?device|"
    r"deadline exceeded",
    re.IGNORECASE,
)
_RECENT = 64  # invoke times per stage the adaptive timeout looks at
_DONE = object()  # a queue is stopped and empty, or aborted
_TIMEOUT = object()


class _WaitQueue:
    """libcoral's WaitQueue: FIFO, optional max size, ``stop_waiters`` for a graceful end, ``abort`` to drop all."""

    def __init__(self, max_size: int | None = None) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._max = max_size
        self._cond = threading.Condition()
        self._stopped = False
        self._aborted = False
        self.peak = 0

    def set_max_size(self, size: int | None) -> None:
        with self._cond:
            self._max = size
            self._cond.notify_all()

    def put(self, item: Any) -> bool:
        """Append, blocking while full; False when the queue was aborted."""
        with self._cond:
            while not self._aborted and self._max is not None and len(self._items) >= self._max:
                self._cond.wait()
            if self._aborted:
                return False
            self._items.append(item)
            self.peak = max(self.peak, len(self._items))
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None = None) -> Any:
        """The next item; ``_DONE`` once stopped and empty or aborted; ``_TIMEOUT`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._items and not self._stopped and not self._aborted:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return _TIMEOUT
                self._cond.wait(left)
            if self._aborted or not self._items:
                return _DONE
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def stop_waiters(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def abort(self) -> int:
        """Drop every item and wake every waiter; return how many items were dropped."""
        with self._cond:
            self._aborted = True
            dropped = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return dropped


@dataclass(frozen=True)
class _Binding:
    """How one replica binds a request: its inputs (name, index, shape) and outputs (name, index), and the
    tensors that travel on past its segment (read by a later segment)."""

    inputs: tuple[tuple[str, int, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, int], ...]
    forward: frozenset[str]


class _Hung(Exception):
    """The watchdog's record of an ``invoke()`` that ran past its stage's timeout."""

    def __init__(self, elapsed_s: float, timeout_s: float) -> None:
        super().__init__(f"no result from invoke() within {timeout_s:g} s")
        self.elapsed_s, self.timeout_s = elapsed_s, timeout_s


class _Shared:
    """State the replica threads share with the runner (the threads never hold the runner itself)."""

    def __init__(self, replicas: Sequence[int]) -> None:
        s = len(replicas)
        self.queues = [_WaitQueue(None if i in (0, s) else INTERNAL_QUEUE_SIZE) for i in range(s + 1)]
        self.times: list[list[list[float]]] = [[[] for _ in range(r)] for r in replicas]
        #: per stage, its last invoke times (all replicas; not reset with ``times``) for the adaptive timeout
        self.recent: list[collections.deque[float]] = [collections.deque(maxlen=_RECENT) for _ in replicas]
        #: per replica, (request, monotonic start) while it works on a request, else None
        self.busy: list[list[tuple[int, float] | None]] = [[None] * r for r in replicas]
        self.alive = list(replicas)
        #: the first fault: stage, replica, request (None: not known), exception
        self.error: tuple[int, int, int | None, BaseException] | None = None
        self.hung: set[tuple[int, int]] = set()  # replicas the watchdog gave up on
        self.stop = threading.Event()  # ends the watchdog
        self.lock = threading.Lock()

    def fail(self, stage: int, replica: int, request: int | None, exc: BaseException) -> None:
        """Record the first error and abort every queue (every thread then ends)."""
        with self.lock:
            if self.error is None:
                self.error = (stage, replica, request, exc)
            if isinstance(exc, _Hung):
                self.hung.add((stage, replica))
        for q in self.queues:
            q.abort()
        self.stop.set()

    def leave(self, stage: int) -> None:
        """One replica of ``stage`` found its input ended; the last one to leave ends the next queue."""
        with self.lock:
            self.alive[stage] -= 1
            last = self.alive[stage] == 0
            if sum(self.alive) == 0:
                self.stop.set()
        if last:
            self.queues[stage + 1].stop_waiters()


def _stage_loop(stage: int, replica: int, interpreter: Any, binding: _Binding, shared: _Shared) -> None:
    """Run one replica of a segment on requests of queue ``stage``; pass the result and the tensors still needed on."""
    inbox, outbox = shared.queues[stage], shared.queues[stage + 1]
    times, recent = shared.times[stage][replica], shared.recent[stage]
    seq = None
    try:
        while (item := inbox.get()) is not _DONE:
            seq, env = item
            shared.busy[stage][replica] = (seq, time.monotonic())
            for name, index, shape in binding.inputs:
                interpreter.set_tensor(index, env[name].reshape(shape))
            t0 = time.perf_counter()
            interpreter.invoke()
            took = time.perf_counter() - t0
            times.append(took)
            recent.append(took)
            out = {name: array for name, array in env.items() if name in binding.forward}
            for name, index in binding.outputs:
                out[name] = np.array(interpreter.get_tensor(index), copy=True)
            shared.busy[stage][replica] = None
            if not outbox.put((seq, out)):
                return
    except BaseException as exc:  # surfaced by push()/pop() as a CoralError
        shared.busy[stage][replica] = None
        shared.fail(stage, replica, seq, exc)
        return
    shared.leave(stage)


def _watchdog(shared: _Shared, limits: list[float | None], poll_s: float) -> None:
    """Fail the pipeline when an ``invoke()`` runs past its stage's timeout (``limits[s]``; None: adaptive)."""
    while not shared.stop.wait(poll_s):
        now = time.monotonic()
        for s, row in enumerate(shared.busy):
            limit = _limit(limits[s], shared.recent[s])
            for j, entry in enumerate(row):
                if entry is not None and now - entry[1] > limit:
                    shared.fail(s, j, entry[0], _Hung(now - entry[1], limit))
                    return


def _limit(fixed: float | None, recent: collections.deque[float]) -> float:
    """A stage's invoke timeout: ``fixed``, else max(floor, factor x its median invoke so far)."""
    if fixed is not None:
        return fixed
    typical = statistics.median(list(recent)) if recent else 0.0
    return max(INVOKE_TIMEOUT_FLOOR_S, INVOKE_TIMEOUT_FACTOR * typical)


def _invoke_limits(invoke_timeout_s: float | Sequence[float] | None, stages: int) -> list[float | None]:
    """Per stage, the fixed invoke timeout (None: adaptive) from the argument or the environment."""
    given: Any = invoke_timeout_s
    if given is None and os.environ.get(INVOKE_TIMEOUT_ENV, "").strip():
        try:
            given = float(os.environ[INVOKE_TIMEOUT_ENV])
        except ValueError:
            raise CoralError(f"{INVOKE_TIMEOUT_ENV}={os.environ[INVOKE_TIMEOUT_ENV]!r} is not a number of seconds") from None
    if given is None:
        return [None] * stages
    values = [float(given)] * stages if isinstance(given, (int, float)) else [float(v) for v in given]
    if len(values) != stages or any(not v > 0 for v in values):
        raise CoralError(f"invoke timeouts must be {stages} positive number(s) of seconds, got {given!r}")
    return list(values)


def _device_lost(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and bool(_DEVICE_LOST.search(str(exc)))


def fault_line(where: str, device: str | None, exc: BaseException, when: str, after: str, verb: str = "failed") -> str:
    """One line for an ``invoke()`` that raised: the Edge TPU is gone (with what to check), or it ``verb``.

    ``where``: ``segment 1 (x.tflite) on usb:1``; ``when``: ``on request 7`` (or empty); ``after``: what
    became of the rest (``the other stages were stopped and joined``)."""
    when = f" {when}" if when else ""
    if _device_lost(exc):
        tpu = "its Edge TPU" if not device or device in where.split() else f"its Edge TPU {device}"
        check = f"the cable and power of {device}" if device else "the Edge TPUs' cables and power"
        return f"{where} lost {tpu}{when} ({_one_line(exc)}); check {check} and 'respect-pass devices'; {after}"
    return f"{where} {verb} ({_one_line(exc)}){when}; {after}"


class WatchedInterpreter:
    """An interpreter whose ``invoke()`` failures become one-line CoralErrors naming where it runs (its
    segment file and Edge TPU); everything else is the wrapped interpreter's. :class:`LiteRtPipelinedRunner`
    runs the wrapped interpreter itself (its own lines name the segment and replica)."""

    def __init__(self, inner: Any, where: str, device: str | None = None) -> None:
        self.inner, self.where, self.device, self.calls = inner, where, device, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def invoke(self) -> None:
        self.calls += 1
        try:
            self.inner.invoke()
        except Exception as exc:
            when = f"on invoke {self.calls}, outside the pipeline"
            raise CoralError(fault_line(self.where, self.device, exc, when, "nothing was measured")) from None


def watch(interpreter: Any, where: str, device: str | None = None) -> WatchedInterpreter:
    """``interpreter`` with one-line invoke failures (see :class:`WatchedInterpreter`)."""
    return interpreter if isinstance(interpreter, WatchedInterpreter) else WatchedInterpreter(interpreter, where, device)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_stages(interpreters: Sequence[Any]) -> list[list[Any]]:
    """Per segment, its replicas' interpreters: a plain interpreter is one replica, a list or tuple several."""
    if not interpreters:
        raise CoralError("the pipeline needs at least one segment interpreter")
    stages = [list(x) if isinstance(x, (list, tuple)) else [x] for x in interpreters]
    empty = [s for s, group in enumerate(stages) if not group]
    if empty:
        raise CoralError(f"segment {empty[0]} has no interpreter; each segment needs at least one replica")
    if len({id(it) for group in stages for it in group}) != sum(map(len, stages)):
        raise CoralError("the same interpreter is given twice; each replica needs its own interpreter")
    return stages


def _labels(
    stages: list[list[Any]], names: Sequence[str] | None, replica_names: Sequence[Sequence[str]] | None
) -> tuple[list[str], list[list[str]]]:
    """Segment names (default ``segment <i>``) and replica labels (default ``replica <j>``, none when alone)."""
    stage_names = list(names) if names is not None else [f"segment {i}" for i in range(len(stages))]
    if len(stage_names) != len(stages):
        raise CoralError(f"{len(stage_names)} segment names for {len(stages)} segments")
    if replica_names is None:
        return stage_names, [["" if len(g) == 1 else f"replica {j}" for j in range(len(g))] for g in stages]
    labels = [list(row) for row in replica_names]
    if [len(row) for row in labels] != [len(g) for g in stages]:
        raise CoralError(f"replica names for {[len(r) for r in labels]} replicas, not {[len(g) for g in stages]}")
    return stage_names, labels


def _inputs(it: Any) -> list[tuple[str, int, tuple[int, ...]]]:
    return [(d["name"], d["index"], tuple(int(n) for n in d["shape"])) for d in it.get_input_details()]


def _outputs(it: Any) -> list[tuple[str, int]]:
    return [(d["name"], d["index"]) for d in it.get_output_details()]


def _signature(it: Any) -> tuple[list[tuple[str, tuple[int, ...], str]], ...]:
    """An interpreter's inputs and outputs by name, shape and type (the same for replicas of one segment)."""
    return tuple(
        [(d["name"], tuple(int(n) for n in d["shape"]), np.dtype(d["dtype"]).name) for d in details]
        for details in (it.get_input_details(), it.get_output_details())
    )


def _later_reads(firsts: list[Any], names: list[str]) -> list[frozenset[str]]:
    """Check libcoral's binding rules on one interpreter per segment; per segment, the tensors later ones read."""
    ins = [{n for n, *_ in _inputs(it)} for it in firsts]
    outs = [{n for n, _ in _outputs(it)} for it in firsts]
    available = set(ins[0])
    for i in range(len(firsts)):
        missing = sorted(ins[i] - available)
        if missing:
            raise CoralError(
                f"{names[i]} reads {missing[0]!r}, which is neither a model input nor an "
                "output of an earlier segment (segments out of order?)"
            )
        available |= outs[i]
    later: list[set[str]] = [set() for _ in firsts]  # later[i]: tensors read by segments after i
    for i in range(len(firsts) - 2, -1, -1):
        later[i] = later[i + 1] | ins[i + 1]
    for i in range(len(firsts) - 1):
        unread = sorted(outs[i] - later[i])
        if unread:
            raise CoralError(
                f"{names[i]} outputs {unread[0]!r}, which no later segment reads "
                "(libcoral requires every non-final output to be consumed)"
            )
    return [frozenset(s) for s in later]


class LiteRtPipelinedRunner:
    """Run S segments (tflite ``Interpreter`` API, tensors allocated) as a pipeline, one thread per interpreter.

    ``interpreters``: per segment, an interpreter, or a list of interpreters that are replicas of that
    segment (each on its own TPU). ``names`` label the segments in error messages (default
    ``segment <i>``), ``replica_names`` their replicas (default ``replica <j>``, nothing for a lone
    one), ``devices`` the Edge TPU of each replica (``usb:0``; default: a :class:`WatchedInterpreter`'s).
    ``invoke_timeout_s``: how long one ``invoke()`` may run before the pipeline is stopped and its thread
    abandoned (a number, one per segment, ``math.inf``: never; None: the ``RESPECT_PASS_INVOKE_TIMEOUT_S``
    environment variable, else max(10 s, 100 x the stage's median invoke so far)). ``join_timeout_s``
    bounds how long :meth:`close` waits for the threads not known to be hung; ``request_timeout_s`` is
    how long :meth:`pop` waits for the next result by default (None: until it comes, the stream ends or
    a stage fails or hangs).
    """

    def __init__(
        self,
        interpreters: Sequence[Any],
        names: Sequence[str] | None = None,
        join_timeout_s: float = 30.0,
        replica_names: Sequence[Sequence[str]] | None = None,
        request_timeout_s: float | None = None,
        devices: Sequence[Sequence[str | None]] | None = None,
        invoke_timeout_s: float | Sequence[float] | None = None,
    ) -> None:
        self._threads: list[threading.Thread] = []
        self._abandoned: list[str] = []
        self._lock = threading.Lock()
        self._closed = True  # until the threads exist, close() has nothing to do
        self._stages = _as_stages(interpreters)
        self._names, self._replica_labels = _labels(self._stages, names, replica_names)
        for s, group in enumerate(self._stages):
            for j, it in enumerate(group[1:], 1):
                if _signature(it) != _signature(group[0]):
                    raise CoralError(
                        f"{self._where(s, j)} has other inputs or outputs than {self._where(s, 0)}; "
                        "the replicas of a segment must run the same segment file"
                    )
        self._devices = _devices(self._stages, devices)
        limits = _invoke_limits(invoke_timeout_s, len(self._stages))
        later = _later_reads([group[0] for group in self._stages], self._names)
        self._model_inputs = {d["name"]: d for d in self._stages[0][0].get_input_details()}
        self._join_timeout_s = join_timeout_s
        self._request_timeout_s = request_timeout_s
        self._shared = _Shared(self.replicas())
        self._ended = False
        self._pushed = self._next = 0  # sequence number of the next request pushed / popped
        self._held: dict[int, dict[str, np.ndarray]] = {}  # the reorder buffer: results that came early
        self._push_lock = threading.Lock()
        self._pop_lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=_stage_loop,
                name=f"respect-pass-stage-{s}" if len(group) == 1 else f"respect-pass-stage-{s}-replica-{j}",
                daemon=True,
                args=(s, j, unwrap(it), _Binding(tuple(_inputs(it)), tuple(_outputs(it)), later[s]), self._shared),
            )
            for s, group in enumerate(self._stages)
            for j, it in enumerate(group)
        ]
        self._placed = [(s, j) for s, group in enumerate(self._stages) for j in range(len(group))]
        fixed = [v for v in limits if v is not None and not math.isinf(v)]
        poll = min(0.5, max(0.005, min(fixed, default=INVOKE_TIMEOUT_FLOOR_S) / 20))
        self._watchdog = threading.Thread(
            target=_watchdog, name="respect-pass-watchdog", daemon=True, args=(self._shared, limits, poll)
        )
        self._closed = False
        for t in self._threads:
            t.start()
        self._watchdog.start()

    # ----------------------------------------------------------------- pycoral API
    def interpreters(self) -> list[Any]:
        """Every interpreter, in pipeline order (segment 0's replicas first)."""
        return [it for group in self._stages for it in group]

    def set_input_queue_size(self, size: int | None) -> None:
        """Bound the input queue (None: unbounded, the default); ``push`` blocks while it is full."""
        self._shared.queues[0].set_max_size(size)

    def set_output_queue_size(self, size: int | None) -> None:
        """Bound the output queue (None: unbounded, the default); the last stage waits while it is full."""
        self._shared.queues[-1].set_max_size(size)

    def push(self, input_tensors: Mapping[str, np.ndarray]) -> None:
        """Queue one request (model input name -> array); ``{}`` ends the stream."""
        self._raise_if_failed()
        if self._closed:
            raise CoralError("push() on a closed pipeline")
        if self._ended:
            raise CoralError("push() after push({}) ended the stream; make a new runner")
        if not isinstance(input_tensors, Mapping):
            raise CoralError(f"push() takes a dict of input name -> array, not {type(input_tensors).__name__}")
        if not input_tensors:
            self._ended = True
            self._shared.queues[0].stop_waiters()
            return
        env = self._request(input_tensors)
        with self._push_lock:
            queued = self._shared.queues[0].put((self._pushed, env))
            if queued:
                self._pushed += 1
        if not queued:
            self._raise_if_failed()
            raise CoralError("push() on a closed pipeline")

    def pop(self, timeout_s: float | None = None) -> dict[str, np.ndarray] | None:
        """The next result (last segment's output name -> array), in push order; None once drained after ``{}``.

        Blocks until that result is ready, at most ``timeout_s`` seconds (None: the runner's
        ``request_timeout_s``; ``math.inf``: forever), then raises a one-line CoralError.
        """
        self._raise_if_failed()
        wait = self._request_timeout_s if timeout_s is None else timeout_s
        deadline = None if wait is None or math.isinf(wait) else time.monotonic() + wait
        with self._pop_lock:
            if self._closed:
                self._held.clear()
            while self._next not in self._held:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                item = self._shared.queues[-1].get(left)
                if item is _TIMEOUT:
                    raise CoralError(self._timeout_message(wait))
                if item is _DONE:
                    self._end_of_results()
                    return None
                self._held[item[0]] = item[1]
            self._next += 1
            return self._held.pop(self._next - 1)

    # ----------------------------------------------------------------- extras
    def replicas(self) -> list[int]:
        """How many interpreters (replicas) each segment runs on."""
        return [len(group) for group in self._stages]

    def stage_times_s(self) -> list[list[float]]:
        """Seconds each ``invoke()`` took, per segment (all its replicas), since the start or the last reset."""
        return [[t for times in stage for t in list(times)] for stage in self._shared.times]

    def replica_times_s(self) -> list[list[list[float]]]:
        """Seconds each ``invoke()`` took, per segment and replica, since the start or the last reset."""
        return [[list(times) for times in stage] for stage in self._shared.times]

    def reset_stage_times(self) -> None:
        """Forget the recorded invoke times."""
        for stage in self._shared.times:
            for times in stage:
                times.clear()

    def queue_peaks(self) -> list[int]:
        """The most requests each queue held at once: input queue, the S-1 internal ones, output queue."""
        return [q.peak for q in self._shared.queues]

    @property
    def running(self) -> bool:
        """Whether any replica thread (or the watchdog) is still alive."""
        return any(t.is_alive() for t in self._threads) or self._watchdog_alive()

    def abandoned(self) -> list[str]:
        """The replicas (``segment 1 replica 0``) whose threads :meth:`close` left inside ``invoke()``."""
        return list(self._abandoned)

    def close(self) -> None:
        """Stop the pipeline, dropping requests still in it, and join every thread but those the watchdog found
        hung (abandoned: daemons stuck in ``invoke()``, see :meth:`abandoned`). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._shared.stop.set()
        dropped = sum(q.abort() for q in self._shared.queues) + len(self._held)
        deadline = time.monotonic() + self._join_timeout_s
        with self._shared.lock:
            hung = set(self._shared.hung)
        me = threading.current_thread()
        for t, placed in zip([*self._threads, self._watchdog], [*self._placed, None]):
            if t is not me and placed not in hung:
                t.join(max(0.0, deadline - time.monotonic()))
        stuck = [(t, p) for t, p in zip(self._threads, self._placed) if t.is_alive() and t is not me]
        self._abandoned = [self._where(*p) for _, p in stuck]
        # after a fault its one line says it all: a warning would be a second line on stderr
        level = logging.INFO if self._shared.error is not None else logging.WARNING
        if stuck:
            log.log(level, "pipeline threads %s abandoned inside invoke() (daemons)", [t.name for t, _ in stuck])
        if dropped:
            log.log(level, "%d unconsumed request(s) or result(s) dropped when the pipeline was closed", dropped)

    def __enter__(self) -> LiteRtPipelinedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise or print from a finalizer
            log.debug("closing a pipeline on deletion failed", exc_info=True)

    # ----------------------------------------------------------------- internals
    def _where(self, stage: int, replica: int) -> str:
        label = self._replica_labels[stage][replica]
        return f"{self._names[stage]} {label}" if label else self._names[stage]

    def _request(self, input_tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A copy of one request's model inputs, checked against the first segment's inputs."""
        if set(input_tensors) != set(self._model_inputs):
            raise CoralError(
                f"push() got tensors {sorted(input_tensors)} but the model inputs are {sorted(self._model_inputs)}"
            )
        env = {}
        for name, d in self._model_inputs.items():
            array = np.asarray(input_tensors[name])
            if array.dtype != np.dtype(d["dtype"]) or array.size != int(np.prod(d["shape"])):
                raise CoralError(
                    f"push(): {name!r} must be {np.dtype(d['dtype']).name} with "
                    f"{int(np.prod(d['shape']))} elements, got {array.dtype.name} {array.shape}"
                )
            env[name] = np.array(array.reshape(d["shape"]), copy=True)
        return env

    def _end_of_results(self) -> None:
        """The output queue ended: raise a stage's error, or one for a result that never came."""
        self._raise_if_failed()
        if self._held and not self._closed:
            raise CoralError(
                f"the pipeline ended without the result of request {self._next} "
                f"({len(self._held)} later result(s) held); the pipeline lost a request"
            )
        self._held.clear()

    def _timeout_message(self, wait: float | None) -> str:
        """One line for a pop() that timed out: which request is stuck where, if any is."""
        head = f"no pipeline result within {wait:g} s"
        in_flight = self._pushed - self._next
        if in_flight <= 0:
            return f"{head}: every request pushed was popped (pop() before push()?)"
        now = time.monotonic()
        busy = [(b[1], b[0], s, j) for s, row in enumerate(self._shared.busy) for j, b in enumerate(row) if b]
        if not busy:
            return f"{head}: {in_flight} request(s) in flight, none inside a segment"
        since, seq, s, j = min(busy)
        return f"{head}: request {seq} has been in {self._where(s, j)} for {now - since:.1f} s (a hung invoke()?)"

    def _watchdog_alive(self) -> bool:
        return hasattr(self, "_watchdog") and self._watchdog.is_alive()

    def _raise_if_failed(self) -> None:
        """After a fault: close (join what can be joined) and raise its one line."""
        error = self._shared.error if self._threads else None
        if error is None:
            return
        self.close()
        stage, replica, request, exc = error
        where, device = self._where(stage, replica), self._devices[stage][replica]
        when = "in the pipeline" if request is None else f"on request {request}"
        others = [w for w in self._abandoned if w != where]
        rest = (
            f"the other stages were stopped, but {', '.join(others)} stayed inside invoke() and were abandoned"
            if others
            else "the other stages were stopped and joined"
        )
        if isinstance(exc, _Hung):
            check = f" (is {device} still connected? see 'respect-pass devices')" if device else ""
            raise CoralError(
                f"{where} hung {when}: no result from invoke() within {exc.timeout_s:g} s{check}; its thread "
                f"is abandoned (a daemon: it does not hold up exit) and {rest}"
            )
        raise CoralError(fault_line(where, device, exc, when if request is not None else "", rest, "failed in the pipeline"))


def unwrap(it: Any) -> Any:
    """The interpreter a stage thread runs: a :class:`WatchedInterpreter`'s own (the runner names faults)."""
    return it.inner if isinstance(it, WatchedInterpreter) else it


def _devices(stages: list[list[Any]], devices: Sequence[Sequence[str | None]] | None) -> list[list[str | None]]:
    """Each replica's Edge TPU: as given, else a :class:`WatchedInterpreter`'s, else None."""
    if devices is None:
        return [[getattr(it, "device", None) if isinstance(it, WatchedInterpreter) else None for it in g] for g in stages]
    rows = [list(row) for row in devices]
    if [len(row) for row in rows] != [len(g) for g in stages]:
        raise CoralError(f"devices for {[len(r) for r in rows]} replicas, not {[len(g) for g in stages]}")
    return rows
