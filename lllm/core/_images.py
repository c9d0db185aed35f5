"""Image loading for messages: a path, a PIL image, raw bytes, a base64 string or a data URL becomes an
`ImageData` (base64 payload + the MIME type sniffed from the bytes themselves, never guessed from a name).

Model APIs take PNG, JPEG, GIF and WebP. Other formats Pillow can read (BMP, TIFF, ...) are converted to PNG;
anything else is a `UsageError` that says what was wrong. Pillow is imported only when it is needed.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lllm.errors import UsageError

__all__ = ["ImageData", "load_image", "sniff_mime"]

SUPPORTED_MIME = ("image/png", "image/jpeg", "image/gif", "image/webp")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[^;,]*)*(?P<b64>;base64)?,(?P<data>.*)$", re.S)
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")


@dataclass(slots=True)
class ImageData:
    """One image attached to a message: base64 data and its real MIME type."""

    mime: str
    """The MIME type sniffed from the bytes ("image/png", "image/jpeg", "image/gif" or "image/webp")."""
    data: str
    """The image bytes, base64-encoded (standard alphabet, no line breaks)."""
    source: str | None = None
    """Where it came from, for logs ("path:/x/chart.png", "pil", "base64", "bytes", a tool name)."""

    @property
    def data_url(self) -> str:
        """The `data:<mime>;base64,<data>` URL an `image_url` part carries."""
        return f"data:{self.mime};base64,{self.data}"

    def to_part(self) -> dict[str, Any]:
        """The OpenAI chat-format image part."""
        return {"type": "image_url", "image_url": {"url": self.data_url}}

    def to_bytes(self) -> bytes:
        """The decoded image bytes."""
        return base64.b64decode(self.data)


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of image bytes from their magic number, or None when they are not a known image format.

    Args:
        data: The first bytes of the file (16 are enough).

    Returns:
        "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff", or None.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return None


def load_image(image: Any, *, source: str | None = None) -> ImageData:
    """Turn what the user gave into an `ImageData` with the right MIME type.

    Args:
        image: A file path (`str` or `Path`), a PIL image, raw `bytes`, a base64 string, a `data:` URL, or an
            `ImageData` (returned as is).
        source: A label for logs; by default it says what kind of input it was.

    Returns:
        The image as base64 data with its MIME type sniffed from the bytes.

    Raises:
        UsageError: The path does not exist or is not an image, the string is neither a path nor base64 image
            data, the bytes are not an image format, or the object is of a type this function does not take.
    """
    if isinstance(image, ImageData):
        return image
    if isinstance(image, Path):
        return _from_path(image, source)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(image), source or "bytes", what="the image bytes")
    if isinstance(image, str):
        return _from_str(image, source)
    if _is_pil_image(image):
        return _from_pil(image, source or "pil")
    raise UsageError(
        f"cannot use an object of type {type(image).__name__!r} as an image; pass a file path, a PIL image, "
        "raw bytes or a base64 string",
        value_type=type(image).__name__,
    )


def _from_str(text: str, source: str | None) -> ImageData:
    stripped = text.strip()
    match = _DATA_URL.match(stripped) if stripped.startswith("data:") else None
    if match:
        if not match.group("b64"):
            raise UsageError(f"the data URL {stripped[:60]!r}... is not base64-encoded; use data:<mime>;base64,<data>")
        raw = _b64decode(match.group("data"))
        if raw is None:
            raise UsageError(f"the data URL {stripped[:60]!r}... does not hold valid base64 data")
        return _from_bytes(raw, source or "data-url", what="the data URL")
    if len(stripped) < 4096 and "\n" not in stripped:
        path = Path(os.path.expanduser(stripped))
        try:
            exists = path.exists()
        except OSError:  # a name too long for the file system, for instance: not a path then
            exists = False
        if exists:
            return _from_path(path, source)
    raw = _b64decode(stripped) if _B64_CHARS.match(stripped) else None
    if raw is not None and sniff_mime(raw[:16]) is not None:
        return _from_bytes(raw, source or "base64", what="the base64 string")
    if len(stripped) < 4096 and _looks_like_path(stripped):
        raise UsageError(
            f"image path {stripped!r} does not exist (relative to {os.getcwd()!r}); check the path, or pass "
            "a PIL image or base64 data instead",
            path=stripped,
        )
    detail = "" if raw is None else f" (it decodes as base64, to {len(raw)} bytes that are not an image)"
    raise UsageError(
        f"the string {_short(stripped)!r} is neither an existing file path nor base64-encoded image data{detail}; "
        "pass a file path, a PIL image or base64 PNG/JPEG/GIF/WebP data",
        value=_short(stripped),
    )


def _from_path(path: Path, source: str | None) -> ImageData:
    if not path.exists():
        raise UsageError(f"image path {str(path)!r} does not exist; check the path", path=str(path))
    if path.is_dir():
        raise UsageError(f"image path {str(path)!r} is a directory, not an image file", path=str(path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read image file {str(path)!r}: {exc}", path=str(path)) from exc
    return _from_bytes(raw, source or f"path:{path}", what=f"the file {str(path)!r}")


def _from_bytes(raw: bytes, source: str, *, what: str) -> ImageData:
    mime = sniff_mime(raw[:16])
    if mime in SUPPORTED_MIME:
        return ImageData(mime=mime, data=base64.b64encode(raw).decode("ascii"), source=source)
    if mime is None:
        raise UsageError(
            f"{what} is not an image ({len(raw)} bytes starting with {raw[:8]!r}); model APIs take PNG, JPEG, "
            "GIF or WebP",
            source=source,
        )
    return _convert_to_png(raw, source, what=what)


def _convert_to_png(raw: bytes, source: str, *, what: str) -> ImageData:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return _from_pil(img, source)
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{what} looks like an image but Pillow cannot read it: {exc}", source=source) from exc


def _from_pil(img: Any, source: str) -> ImageData:
    fmt = (getattr(img, "format", None) or "").upper()
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=95)
        mime = "image/jpeg"
    else:
        if img.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        img.save(buf, format="PNG")
        mime = "image/png"
    return ImageData(mime=mime, data=base64.b64encode(buf.getvalue()).decode("ascii"), source=source)


def _is_pil_image(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    if not module.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(obj, Image.Image)


def _b64decode(text: str) -> bytes | None:
    cleaned = re.sub(r"\s+", "", text)
    if not cleaned:
        return None
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _looks_like_path(text: str) -> bool:
    if "/" in text or "\\" in text or text.startswith(("~", ".")):
        return True
    return bool(re.search(r"\.[A-Za-z0-9]{2,5}$", text)) and len(text) < 260


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
