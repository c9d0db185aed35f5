"""What a browser action leaves in the log: the page it ended on and a screenshot (a JPEG of the viewport), with
every field and text that shows one of the session's secrets blacked out -- found without handing a secret to
the page -- and URLs redacted; a failed action keeps its page too."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image, ImageStat

from lllm.errors import BrowserError
from lllm.tools.cua import BrowserSession

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 800, "height": 480}


def picture(record: Any) -> Image.Image:
    assert record.screenshot_mime == "image/jpeg", record
    return Image.open(io.BytesIO(base64.b64decode(record.screenshot))).convert("L")


def brightness(image: Image.Image, box: dict[str, float]) -> float:
    """The mean grey level (0 black, 255 white) inside an element's box, a few pixels in from its edges."""
    inner = (box["x"] + 3, box["y"] + 3, box["x"] + box["width"] - 3, box["y"] + box["height"] - 3)
    return float(ImageStat.Stat(image.crop(tuple(round(v) for v in inner))).mean[0])


def box_of(session: BrowserSession, selector: str) -> dict[str, float]:
    async def find() -> Any:
        return await session.page.locator(selector).first.bounding_box()

    found = session.driver.run(find, timeout=10)
    assert found, selector
    return found


def test_each_action_records_its_page_and_a_screenshot(server: Any, cu_block: dict[str, Any]) -> None:
    records: list[Any] = []
    with BrowserSession({**cu_block, "viewport": VIEWPORT}, tracer=records.append, agent="shopper") as s:
        s.perform("navigate", url=server.url("form.html"))
        s.perform("type_text", selector="input[name=name]", text="Ada")
        s.perform("click", selector="button")
    assert [r.url for r in records] == [server.url("form.html"), server.url("form.html"), server.url("submit/contact")]
    shots = [picture(r) for r in records]
    assert all(shot.size == (800, 480) for shot in shots)
    assert shots[0].tobytes() != shots[2].tobytes()  # the form, then the thanks page


def test_a_failed_action_keeps_the_page_it_failed_on(server: Any, cu_block: dict[str, Any]) -> None:
    records: list[Any] = []
    with BrowserSession({**cu_block, "viewport": VIEWPORT, "action_timeout_s": 1}, tracer=records.append) as s:
        s.perform("navigate", url=server.url("form.html"))
        with pytest.raises(BrowserError):
            s.perform("click", selector="#no-such-button")
    failed = records[-1]
    assert failed.status in ("error", "timeout") and failed.url == server.url("form.html")
    assert picture(failed).size == (800, 480)


def test_screenshots_can_be_left_out_of_the_records(server: Any, cu_block: dict[str, Any]) -> None:
    records: list[Any] = []
    block = {**cu_block, "viewport": VIEWPORT, "record_screenshots": False}
    with BrowserSession(block, tracer=records.append) as s:
        s.perform("navigate", url=server.url("form.html"))
    assert records[0].url == server.url("form.html") and records[0].screenshot is None


def test_a_secret_on_screen_is_blacked_out_and_never_handed_to_the_page(server: Any, cu_block: dict[str, Any]) -> None:
    """The session knows two secrets; the page is given one (typed into a field, and shown in its text via the
    URL). In the records both places are black, the URL is redacted, and the page, which spies on every
    string its scripts are handed, never sees the other secret."""
    records: list[Any] = []
    secrets = {"TOKEN": "tok-5551234-shown", "OTHER": "never-on-this-page-77"}
    with BrowserSession({**cu_block, "viewport": VIEWPORT}, secrets=secrets, tracer=records.append) as s:
        s.perform("navigate", url=server.url("spy.html?code={{secret:TOKEN}}"))
        s.perform("type_text", selector="input[name=token]", text="{{secret:TOKEN}}")
        s.perform("type_text", selector="input[name=nick]", text="plain nickname")
        token_field, nick_field, code = (box_of(s, sel) for sel in ("input[name=token]", "input[name=nick]", "#code"))

        async def spied() -> Any:
            return await s.page.evaluate("window.__seen")

        seen = s.driver.run(spied, timeout=10)
    assert not [x for x in seen if "never-on-this-page" in x], seen
    assert "tok-5551234-shown" not in repr(records) and "never-on-this-page" not in repr(records)
    assert records[0].url == server.url("spy.html?code={{secret:TOKEN}}")
    last = picture(records[-1])
    assert brightness(last, token_field) < 40 and brightness(last, code) < 40  # blacked out
    assert brightness(last, nick_field) > 150  # a field without a secret is left as it is
