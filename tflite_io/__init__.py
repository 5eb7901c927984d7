"""tflite_io: the bottom layer. Flatbuffer I/O for ``.tflite`` models and the OpGraph IR."""

from .errors import (
    ModelFormatError,
    OutputError,
    RespectPassError,
    StageMapError,
    UnsupportedModelError,
    VerificationError,
)
from .graph import Edge, Op, OpGraph, Quantization, TensorInfo
from .reader import EDGETPU_CUSTOM_OP, TfliteModel, custom_op_codes, read, read_model
from .stages import SegmentInterface, contiguous_stage_map, max_stages, segment_interfaces, validate_stage_map
from .verify import VerifyReport, check_wiring, verify_model_segments, verify_segments
from .writer import build_segments, segment_file_name, stale_segment_files, write_files, write_segments

__all__ = [
    "EDGETPU_CUSTOM_OP",
    "custom_op_codes",
    "Edge",
    "ModelFormatError",
    "Op",
    "OpGraph",
    "OutputError",
    "Quantization",
    "RespectPassError",
    "SegmentInterface",
    "StageMapError",
    "TensorInfo",
    "TfliteModel",
    "UnsupportedModelError",
    "VerificationError",
    "VerifyReport",
    "build_segments",
    "check_wiring",
    "verify_model_segments",
    "contiguous_stage_map",
    "max_stages",
    "read",
    "read_model",
    "segment_file_name",
    "segment_interfaces",
    "validate_stage_map",
    "verify_segments",
    "write_files",
    "stale_segment_files",
    "write_segments",
]
