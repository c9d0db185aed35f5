"""Image loading: paths, PIL images, bytes, base64 and data URLs; MIME from the bytes; clear errors."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from lllm.core._images import ImageData, load_image, sniff_mime
from lllm.errors import UsageError


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (5, 4), "red" if mode == "RGB" else 1).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")]
)
def test_path_keeps_its_own_format(tmp_path: Path, fmt: str, mime: str) -> None:
    raw = _encoded(fmt)
    path = tmp_path / "pic.bin"  # the name says nothing: the MIME type comes from the bytes
    path.write_bytes(raw)
    for given in (path, str(path)):
        img = load_image(given)
        assert img.mime == mime
        assert img.to_bytes() == raw
        assert img.data_url.startswith(f"data:{mime};base64,")
        assert img.to_part() == {"type": "image_url", "image_url": {"url": img.data_url}}


def test_jpeg_named_png_is_sent_as_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    path.write_bytes(_encoded("JPEG"))
    assert load_image(str(path)).mime == "image/jpeg"


def test_bmp_is_converted_to_png(tmp_path: Path) -> None:
    img = load_image(_encoded("BMP"))
    assert img.mime == "image/png"
    assert Image.open(io.BytesIO(img.to_bytes())).size == (5, 4)


def test_pil_images() -> None:
    png = load_image(Image.new("RGBA", (3, 3)))
    assert png.mime == "image/png" and png.source == "pil"
    jpeg_file = Image.open(io.BytesIO(_encoded("JPEG")))
    assert load_image(jpeg_file).mime == "image/jpeg"
    cmyk = Image.new("CMYK", (2, 2))
    assert load_image(cmyk).mime == "image/png"


def test_base64_and_data_url() -> None:
    raw = _encoded("PNG")
    b64 = base64.b64encode(raw).decode()
    assert load_image(b64).to_bytes() == raw
    assert load_image(f"data:image/png;base64,{b64}").to_bytes() == raw
    assert load_image(base64.urlsafe_b64encode(raw).decode().rstrip("=")).to_bytes() == raw
    wrapped = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60))
    assert load_image(wrapped).mime == "image/png"


def test_imagedata_passes_through() -> None:
    img = ImageData(mime="image/png", data="AAAA")
    assert load_image(img) is img


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nope.png"), "chart.png", tmp_path / "gone.jpg"):
        with pytest.raises(UsageError, match="does not exist"):
            load_image(missing)


def test_non_image_file_and_directory(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("just text")
    with pytest.raises(UsageError, match="not an image") as err:
        load_image(text)
    assert "notes.png" in str(err.value)
    with pytest.raises(UsageError, match="directory"):
        load_image(tmp_path)


def test_strings_that_are_neither_path_nor_image() -> None:
    with pytest.raises(UsageError, match="neither an existing file path nor base64"):
        load_image("hello there")
    with pytest.raises(UsageError, match="not an image"):
        load_image(base64.b64encode(b"plain bytes, no image").decode())
    with pytest.raises(UsageError, match="not base64"):
        load_image("data:image/png,rawdata")


def test_unsupported_object() -> None:
    with pytest.raises(UsageError, match="'int'"):
        load_image(42)


def test_sniff() -> None:
    assert sniff_mime(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_mime(b"%PDF-1.7") is None
