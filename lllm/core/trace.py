"""The trace records' old import path: re-exported from `lllm.records`, where they live (nothing in lllm imports
this module; code written against the earlier path runs unchanged)."""

from __future__ import annotations

from lllm.records import (
    IMAGE_BYTES,
    MAX_IMAGES,
    PAYLOAD_CHARS,
    RECORD_TYPES,
    AgentCallRecord,
    ApiCallRecord,
    BrowserActionRecord,
    CellRecord,
    ModelCallRecord,
    ToolCallRecord,
    TraceRecord,
    TraceRecordAdapter,
    Tracer,
    cap,
    null_tracer,
)

__all__ = ["IMAGE_BYTES", "MAX_IMAGES", "PAYLOAD_CHARS", "RECORD_TYPES", "AgentCallRecord", "ApiCallRecord",
           "BrowserActionRecord", "CellRecord", "ModelCallRecord", "ToolCallRecord", "TraceRecord",
           "TraceRecordAdapter", "Tracer", "cap", "null_tracer"]
