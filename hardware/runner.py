"""A pipelined runner for K segment interpreters that needs only LiteRT (plus libedgetpu on Edge TPUs).

:class:`LiteRtPipelinedRunner` follows libcoral's ``PipelinedModelRunner``
(github.com/google-coral/libcoral, ``coral/pipeline/pipelined_model_runner.cc``,
``internal/segment_runner.cc``, ``internal/thread_safe_queue.h``) with pycoral
2.x's Python API (``push(dict)``, ``pop() -> dict | None``, ``push({})`` ends
the stream):

* one thread per segment; segment i reads queue i and writes queue i+1;
* the K-1 queues between segments hold at most one request (libcoral's
  ``kInternalQueueSize = 1``), so a slow segment stalls the ones before it;
* the input queue (before segment 0) and the output queue (after the last
  segment) are unbounded, as in libcoral, whose callers "are allowed to push
  faster than processing speed of pipeline"; :meth:`set_input_queue_size`
  and :meth:`set_output_queue_size` bound them (``push`` then blocks);
* tensors are bound by name: segment i's inputs must be model inputs (segment
  0's inputs) or outputs of segments before i; every output of a segment but
  the last must be read by a later segment (libcoral CHECK-fails otherwise).
  A tensor travels with the request until its last consumer has run, and
  ``pop`` returns the last segment's outputs by name.

Unlike libcoral, ``push({})`` does not wait for the stages (``close`` does);
an exception in a stage stops the whole pipeline at once (results in flight are
dropped) and the next or pending ``push``/``pop`` raises a one-line
:class:`CoralError` naming the segment. Each stage records the wall time of
every ``invoke()``. Nothing is ever printed; warnings go to ``logging``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .devices import CoralError

__all__ = ["INTERNAL_QUEUE_SIZE", "LiteRtPipelinedRunner"]

log = logging.getLogger(__name__)

INTERNAL_QUEUE_SIZE = 1  # libcoral's kInternalQueueSize
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


class _Shared:
    """State the stage threads share with the runner (the threads never hold the runner itself)."""

    def __init__(self, num_segments: int) -> None:
        self.queues = [_WaitQueue(None if i in (0, num_segments) else INTERNAL_QUEUE_SIZE) for i in range(num_segments + 1)]
        self.times: list[list[float]] = [[] for _ in range(num_segments)]
        self.error: tuple[int, BaseException] | None = None
        self.lock = threading.Lock()

    def fail(self, stage: int, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = (stage, exc)
        for q in self.queues:
            q.abort()


def _stage_loop(
    stage: int,
    interpreter: Any,
    inputs: list[tuple[str, int, tuple[int, ...]]],
    outputs: list[tuple[str, int]],
    forward: frozenset[str],
    shared: _Shared,
) -> None:
    """Run one segment on every request of queue ``stage``; pass the result and the tensors still needed on."""
    inbox, outbox = shared.queues[stage], shared.queues[stage + 1]
    try:
        while (env := inbox.get()) is not _DONE:
            for name, index, shape in inputs:
                interpreter.set_tensor(index, env[name].reshape(shape))
            t0 = time.perf_counter()
            interpreter.invoke()
            shared.times[stage].append(time.perf_counter() - t0)
            out = {name: array for name, array in env.items() if name in forward}
            for name, index in outputs:
                out[name] = np.array(interpreter.get_tensor(index), copy=True)
            if not outbox.put(out):
                return
    except BaseException as exc:  # surfaced by push()/pop() as a CoralError
        shared.fail(stage, exc)
        return
    outbox.stop_waiters()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LiteRtPipelinedRunner:
    """Run K segment interpreters (tflite ``Interpreter`` API, tensors allocated) as a pipeline, one thread each.

    ``names`` label the segments in error messages (default ``segment <i>``); ``join_timeout_s``
    bounds how long :meth:`close` waits for a thread stuck in ``invoke()``.
    """

    def __init__(
        self, interpreters: Sequence[Any], names: Sequence[str] | None = None, join_timeout_s: float = 30.0
    ) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = True  # until the threads exist, close() has nothing to do
        if not interpreters:
            raise CoralError("the pipeline needs at least one segment interpreter")
        self._interpreters = list(interpreters)
        k = len(self._interpreters)
        self._names = list(names) if names is not None else [f"segment {i}" for i in range(k)]
        if len(self._names) != k:
            raise CoralError(f"{len(self._names)} segment names for {k} interpreters")
        ins = [
            [(d["name"], d["index"], tuple(int(n) for n in d["shape"])) for d in it.get_input_details()]
            for it in self._interpreters
        ]
        outs = [[(d["name"], d["index"]) for d in it.get_output_details()] for it in self._interpreters]
        self._model_inputs = {d["name"]: d for d in self._interpreters[0].get_input_details()}
        available = set(self._model_inputs)
        for i in range(k):
            missing = sorted({n for n, *_ in ins[i]} - available)
            if missing:
                raise CoralError(
                    f"{self._names[i]} reads {missing[0]!r}, which is neither a model input nor an "
                    "output of an earlier segment (segments out of order?)"
                )
            available |= {n for n, _ in outs[i]}
        later: list[set[str]] = [set() for _ in range(k)]  # later[i]: tensors read by segments after i
        for i in range(k - 2, -1, -1):
            later[i] = later[i + 1] | {n for n, *_ in ins[i + 1]}
        for i in range(k - 1):
            unread = sorted({n for n, _ in outs[i]} - later[i])
            if unread:
                raise CoralError(
                    f"{self._names[i]} outputs {unread[0]!r}, which no later segment reads "
                    "(libcoral requires every non-final output to be consumed)"
                )
        self._join_timeout_s = join_timeout_s
        self._shared = _Shared(k)
        self._ended = False
        self._threads = [
            threading.Thread(
                target=_stage_loop,
                name=f"respect-pass-stage-{i}",
                daemon=True,
                args=(i, it, ins[i], outs[i], frozenset(later[i]), self._shared),
            )
            for i, it in enumerate(self._interpreters)
        ]
        self._closed = False
        for t in self._threads:
            t.start()

    # ----------------------------------------------------------------- pycoral API
    def interpreters(self) -> list[Any]:
        """The segment interpreters, in pipeline order."""
        return list(self._interpreters)

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
        if not self._shared.queues[0].put(env):
            self._raise_if_failed()
            raise CoralError("push() on a closed pipeline")

    def pop(self, timeout_s: float | None = None) -> dict[str, np.ndarray] | None:
        """The next result (last segment's output name -> array), in push order; None once drained after ``{}``.

        Blocks until a result is ready (at most ``timeout_s`` seconds when given, then CoralError).
        """
        self._raise_if_failed()
        out = self._shared.queues[-1].get(timeout_s)
        if out is _TIMEOUT:
            raise CoralError(f"no pipeline result within {timeout_s:g} s")
        if out is _DONE:
            self._raise_if_failed()
            return None
        return out

    # ----------------------------------------------------------------- extras
    def stage_times_s(self) -> list[list[float]]:
        """Seconds each ``invoke()`` took, per segment, since the start or :meth:`reset_stage_times`."""
        return [list(t) for t in self._shared.times]

    def reset_stage_times(self) -> None:
        """Forget the recorded invoke times."""
        for t in self._shared.times:
            t.clear()

    def queue_peaks(self) -> list[int]:
        """The most requests each queue held at once: input queue, the K-1 internal ones, output queue."""
        return [q.peak for q in self._shared.queues]

    @property
    def running(self) -> bool:
        """Whether any stage thread is still alive."""
        return any(t.is_alive() for t in self._threads)

    def close(self) -> None:
        """Stop the pipeline, dropping requests still in it, and join every stage thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        dropped = sum(q.abort() for q in self._shared.queues)
        for t in self._threads:
            t.join(self._join_timeout_s)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning(
                "pipeline threads %s still running after %.0f s (an invoke() that does not return)",
                stuck,
                self._join_timeout_s,
            )
        if dropped:
            log.warning("%d unconsumed request(s) or result(s) dropped when the pipeline was closed", dropped)

    def __enter__(self) -> LiteRtPipelinedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise or print from a finalizer
            log.debug("closing a pipeline on deletion failed", exc_info=True)

    def _raise_if_failed(self) -> None:
        error = self._shared.error if self._threads else None
        if error is None:
            return
        self.close()
        stage, exc = error
        raise CoralError(f"{self._names[stage]} failed in the pipeline ({_one_line(exc)}); the pipeline is stopped")
