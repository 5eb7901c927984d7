"""Fake ``pycoral.pipeline.pipelined_model_runner`` with libcoral's semantics, over LiteRT.

One worker thread per segment; each request travels as a dict of every tensor
produced so far, so a segment reads its inputs by name from the model inputs
or any earlier segment's outputs, as libcoral forwards them. ``push`` takes a
dict keyed by the first segment's input names (pycoral 2.x), ``push({})`` ends
the stream and, like libcoral's ``ShutdownPipeline``, waits for the workers;
a second ``push({})`` raises ``RuntimeError("Pipeline was turned off before.")``.
``pop`` returns the last segment's outputs by name and ``None`` once drained.

``__del__`` is pycoral's, to the letter: ``DEL_STYLE = "2022"`` (default) is
google-coral/pycoral master after PR #80 (prints "Push empty request to stop the
pipeline..." and, when the pipeline was already ended, "The pipeline has already
been closed successfully." to stdout); ``"2.0.0"`` is the released wheel (the
second ``push({})`` raises out of ``__del__``). Both print a WARNING for results
left unconsumed.

``RUNNERS`` keeps a :class:`Record` per runner (not the runner, which must stay
collectable) so a test can check that it was shut down and drained; the workers
hold no reference to the runner either, as libcoral's C++ threads hold none.
"""

import queue
import threading

import numpy as np

RUNNERS = []
DEL_STYLE = "2022"
_END = object()


class Record:
    """What a test may check about one runner after the fact."""

    def __init__(self):
        self.pushed = self.popped = 0
        self.closed = self.drained = self.deleted = False


class _Wrapper:
    """Stands in for ``_pywrap_coral.PipelinedModelRunnerWrapper`` (truthy, like the pybind object)."""


def _work(it, inbox, outbox):
    while (env := inbox.get()) is not _END:
        for d in it.get_input_details():
            it.set_tensor(d["index"], env[d["name"]])
        it.invoke()
        env = dict(env)
        for d in it.get_output_details():
            env[d["name"]] = it.get_tensor(d["index"]).copy()
        outbox.put(env)
    outbox.put(_END)


class PipelinedModelRunner:
    def __init__(self, interpreters):
        self._runner = None
        if not interpreters:
            raise ValueError("At least one interpreter expected")
        prev_outputs = {d["name"] for d in interpreters[0].get_input_details()}
        for index, it in enumerate(interpreters):
            inputs = {d["name"] for d in it.get_input_details()}
            if not inputs.issubset(prev_outputs):
                raise ValueError(f"Interpreter {index} can not get its input tensors")
            prev_outputs.update(d["name"] for d in it.get_output_details())
        self._interpreters = interpreters
        self._input_types = {d["name"]: d["dtype"] for d in interpreters[0].get_input_details()}
        self._output_names = [d["name"] for d in interpreters[-1].get_output_details()]
        self._queues = [queue.Queue() for _ in range(len(interpreters) + 1)]
        self.record = Record()
        self._workers = [
            threading.Thread(target=_work, args=(it, self._queues[k], self._queues[k + 1]), daemon=True)
            for k, it in enumerate(interpreters)
        ]
        for w in self._workers:
            w.start()
        self._runner = _Wrapper()
        RUNNERS.append(self.record)

    def __del__(self):
        if DEL_STYLE == "2.0.0":
            self._del_2_0_0()
            return
        if self._runner:
            # Push empty request to stop the pipeline in case user forgot.
            try:
                print("Push empty request to stop the pipeline...")
                self.push({})
            except RuntimeError:
                print("The pipeline has already been closed successfully.")
                self.record.deleted = True
                return
            num_unconsumed = 0
            while self.pop():
                num_unconsumed += 1
            if num_unconsumed:
                print(f"WARNING: {num_unconsumed} unconsumed results in the pipeline during destruction!")
        if self._runner:
            self.record.deleted = True

    def _del_2_0_0(self):
        if self._runner:
            self.record.deleted = True
            self.push({})  # raises RuntimeError when the stream was already ended
            num_unconsumed = 0
            while self.pop():
                num_unconsumed += 1
            if num_unconsumed:
                print(f"WARNING: {num_unconsumed} unconsumed results in the pipeline during destruction!")

    @property
    def pushed(self):
        return self.record.pushed

    @property
    def drained(self):
        return self.record.drained

    def set_input_queue_size(self, size):
        pass

    def set_output_queue_size(self, size):
        pass

    def push(self, input_tensors):
        if not isinstance(input_tensors, dict):
            raise TypeError("pycoral 2.x push() takes a dict of tensor name -> numpy array")
        if input_tensors and len(input_tensors) != len(self._input_types):
            raise ValueError(f"Expected input of length {len(self._input_types)}, but got {len(input_tensors)}")
        for key, tensor in input_tensors.items():
            input_type = self._input_types[key]  # KeyError on a wrong name, as in pycoral
            if not isinstance(tensor, np.ndarray) or tensor.dtype != input_type:
                raise ValueError(f"Input should be a list of numpy array of type {input_type}")
        if self.record.closed:
            raise RuntimeError("Pipeline was turned off before.")  # libcoral's InternalError, as pybind raises it
        if not input_tensors:
            self.record.closed = True
            self._queues[0].put(_END)
            for w in self._workers:  # libcoral's ShutdownPipeline joins every segment thread
                w.join()
            return
        self.record.pushed += 1
        self._queues[0].put(dict(input_tensors))

    def pop(self):
        env = self._queues[-1].get()
        if env is _END:
            self._queues[-1].put(_END)  # later pops return None too
            self.record.drained = self.record.closed and self.record.popped == self.record.pushed
            return None
        self.record.popped += 1
        return {name: env[name] for name in self._output_names}

    def interpreters(self):
        return self._interpreters
