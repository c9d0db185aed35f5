"""The CALL_API wire format between the guest client and the gateway: frames and their pydantic models.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON. The guest sends a request
`{"token", "path", "params", "id"}`; the gateway answers `{"id", "ok": true, "data": ...}` or
`{"id", "ok": false, "error": {"type", "message"}}`. `error.type` is one of `ERROR_TYPES`: the name of the
lllm error class the host raised (`ProxyNotActivated`, ...), or `ProxyTimeout` / `BadRequest`, which exist
only on the wire. The guest client (`sandbox/lllm_guest.py`) implements the same format with the stdlib only.

Two reserved paths serve the docs: `_meta/api_doc` (`{"name": proxy}`) and `_meta/directory`.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "ERROR_TYPES",
    "HEADER",
    "META_API_DOC",
    "META_DIRECTORY",
    "CallRequest",
    "ErrorBody",
    "ErrorReply",
    "FrameError",
    "FrameTimeout",
    "OkReply",
    "Reply",
    "ReplyAdapter",
    "encode_error",
    "encode_frame",
    "encode_ok",
]

HEADER = struct.Struct(">I")
"""The length prefix of every frame."""

META_API_DOC = "_meta/api_doc"
META_DIRECTORY = "_meta/directory"

ERROR_TYPES = (
    "GatewayAuthError", "ProxyNotActivated", "EndpointNotFound", "RateLimited", "PayloadTooLarge",
    "ProxyError", "ProxyTimeout", "BadRequest", "ApiBudgetExceeded",
)
"""Every `error.type` the gateway sends."""


class CallRequest(BaseModel):
    """One CALL_API request from the guest."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(max_length=256)
    """The session's token, read by the guest from `gateway.token`."""
    path: str = Field(min_length=1, max_length=512)
    """`"<proxy>/<endpoint>"`, or a reserved `_meta/...` path."""
    params: dict[str, Any] | None = None
    """The endpoint's parameters (a JSON object)."""
    id: int | str = 0
    """Echoed in the reply so the client can match it."""


class ErrorBody(BaseModel):
    """Why a call failed: `type` is in ERROR_TYPES, `message` says what to do."""

    type: str
    message: str


class OkReply(BaseModel):
    """A successful call: `data` is the proxy's JSON result."""

    id: int | str | None = None
    ok: Literal[True] = True
    data: Any = None


class ErrorReply(BaseModel):
    """A refused or failed call."""

    id: int | str | None = None
    ok: Literal[False] = False
    error: ErrorBody


Reply = Union[OkReply, ErrorReply]
ReplyAdapter: TypeAdapter[Any] = TypeAdapter(Reply)


class FrameError(Exception):
    """Internal to the gateway: the byte stream cannot be read as frames (the connection is closed)."""


class FrameTimeout(FrameError):
    """Internal to the gateway: a frame did not arrive whole within its deadline (the connection is closed)."""


def encode_frame(payload: bytes) -> bytes:
    """Prefix `payload` with its length."""
    return HEADER.pack(len(payload)) + payload


def encode_ok(call_id: Any, data_json: bytes) -> bytes:
    """A whole ok frame around already-serialised `data_json` (no second JSON pass over the data)."""
    head = b'{"id":' + json.dumps(call_id).encode() + b',"ok":true,"data":'
    return encode_frame(head + data_json + b"}")


def encode_error(call_id: Any, error_type: str, message: str) -> bytes:
    """A whole error frame."""
    body = {"id": call_id, "ok": False, "error": {"type": error_type, "message": message}}
    return encode_frame(json.dumps(body, ensure_ascii=False).encode())

