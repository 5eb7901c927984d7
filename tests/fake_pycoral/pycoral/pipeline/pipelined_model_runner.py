"""Fake ``pycoral.pipeline.pipelined_model_runner`` with libcoral's semantics, over LiteRT.

One worker thread per segment; each request travels as a dict of every tensor
produced so far, so a segment reads its inputs by name from the model inputs
or any earlier segment's outputs, as libcoral forwards them. ``push`` takes a
dict keyed by the first segment's input names (pycoral 2.x), ``push({})`` ends
the stream, ``pop`` returns the last segment's outputs by name and ``None``
once drained. ``RUNNERS`` keeps every runner so a test can check that each
one was shut down and drained (``runner.drained``).
"""
import queue
import threading

import numpy as np

RUNNERS = []
_END = object()


class PipelinedModelRunner:
    def __init__(self, interpreters):
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
        self._closed = False
        self.pushed = self.popped = 0
        self.drained = False
        self._workers = [threading.Thread(target=self._work, args=(k,), daemon=True) for k in range(len(interpreters))]
        for w in self._workers:
            w.start()
        RUNNERS.append(self)

    def _work(self, k):
        it, inbox, outbox = self._interpreters[k], self._queues[k], self._queues[k + 1]
        while (env := inbox.get()) is not _END:
            for d in it.get_input_details():
                it.set_tensor(d["index"], env[d["name"]])
            it.invoke()
            env = dict(env)
            for d in it.get_output_details():
                env[d["name"]] = it.get_tensor(d["index"]).copy()
            outbox.put(env)
        outbox.put(_END)

    def set_input_queue_size(self, size):
        pass

    def set_output_queue_size(self, size):
        pass

    def push(self, input_tensors):
        if self._closed:
            raise RuntimeError("Pipeline was turned off before.")
        if not isinstance(input_tensors, dict):
            raise TypeError("pycoral 2.x push() takes a dict of tensor name -> numpy array")
        if not input_tensors:
            self._closed = True
            self._queues[0].put(_END)
            return
        if len(input_tensors) != len(self._input_types):
            raise ValueError(f"Expected input of length {len(self._input_types)}, but got {len(input_tensors)}")
        for key, tensor in input_tensors.items():
            input_type = self._input_types[key]  # KeyError on a wrong name, as in pycoral
            if not isinstance(tensor, np.ndarray) or tensor.dtype != input_type:
                raise ValueError(f"Input should be a list of numpy array of type {input_type}")
        self.pushed += 1
        self._queues[0].put(dict(input_tensors))

    def pop(self):
        env = self._queues[-1].get()
        if env is _END:
            self._queues[-1].put(_END)  # later pops return None too
            self.drained = self._closed and self.popped == self.pushed
            return None
        self.popped += 1
        return {name: env[name] for name in self._output_names}

    def interpreters(self):
        return self._interpreters
