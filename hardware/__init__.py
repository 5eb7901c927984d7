"""hardware: the Edge TPU cost model, the simulated pipeline, and (next) the compiler driver and pycoral runner.

Imports only ``tflite_io`` below it; ``respect_pass`` builds on it.
"""
from .cost import StageCost, bottleneck_ms, latency_ms, stage_cost, stage_costs
from .simulate import PipelineRun, simulate_pipeline
from .spec import PCIE, PRESETS, USB, EdgeTpuSpec, SpecError, load_spec, op_class

__all__ = [
    "EdgeTpuSpec", "PCIE", "PRESETS", "PipelineRun", "SpecError", "StageCost", "USB", "bottleneck_ms",
    "latency_ms", "load_spec", "op_class", "simulate_pipeline", "stage_cost", "stage_costs",
]
