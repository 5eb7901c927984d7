"""hardware: the Edge TPU cost model and its calibration, the simulated pipeline, the compiler driver, the runners.

Imports only ``tflite_io`` below it; ``respect_pass`` builds on it.
"""

from .compiler import CompiledSegment, CompilerError, compile_segments
from .cost import StageCost, bottleneck_ms, latency_ms, op_seconds, pipeline_period_ms, stage_cost, stage_costs
from .simulate import PipelineRun, simulate_pipeline
from .spec import (
    DEVBOARD,
    PCIE,
    PRESETS,
    RPI3,
    RPI4,
    SPEC_METAVAR,
    USB,
    USB_SEPARATE,
    EdgeTpuSpec,
    SpecError,
    as_spec,
    load_spec,
    op_class,
)

__all__ = [
    "CompiledSegment",
    "CompilerError",
    "as_spec",
    "compile_segments",
    "EdgeTpuSpec",
    "PCIE",
    "DEVBOARD",
    "RPI4",
    "RPI3",
    "PRESETS",
    "SPEC_METAVAR",
    "PipelineRun",
    "SpecError",
    "StageCost",
    "USB",
    "bottleneck_ms",
    "latency_ms",
    "load_spec",
    "op_class",
    "op_seconds",
    "pipeline_period_ms",
    "USB_SEPARATE",
    "simulate_pipeline",
    "stage_cost",
    "stage_costs",
]
