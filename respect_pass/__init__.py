"""respect-pass: schedule a quantized .tflite model onto a pipeline of K Edge TPUs.

The top layer: the scheduling problem, the schedulers, the partition driver
and the command line. It imports ``tflite_io`` (and, from the hardware issue
on, ``hardware``); nothing imports it.
"""

from .partition import PartitionResult, partition
from .plan import Plan

__all__ = ["Plan", "PartitionResult", "partition"]
__version__ = "0.1.0"
