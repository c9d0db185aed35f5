"""Browser actions: what an agent can do in a page, each recording the Playwright code it ran.

Every action is an async function `action(session, **arguments) -> ActionOutcome` that runs on the driver
loop (`BrowserSession.perform` marshals it there, times it, logs it and traces it). Elements are targeted by
exactly one of: a `ref` from the snapshot (`e12`), a Playwright `selector` (`#id`, `text=Pay`, CSS), or
coordinates `x`/`y` in CSS pixels as a fallback. The code recorded for a ref is the stable locator Playwright
generates for that element (`page.get_by_role("button", name="Pay")`), so the replay script works without
the snapshot that produced the ref.

Consequential actions ask the session's confirmation hook first: a click or Enter that submits a form, an
upload, a navigation off the allowlist (downloads are asked when they start, in the session).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal
from urllib.parse import urlsplit

from lllm.errors import ActionRefused, BlockedNavigation, BrowserError, UsageError
from lllm.tools.cua.safety import ConfirmRequest
from lllm.tools.cua._records import ActionOutcome
from lllm.tools.cua.snapshot import ref_locator

if TYPE_CHECKING:
    from lllm.tools.cua.session import BrowserSession

__all__ = ["ACTIONS", "text_expression"]

_SUBMIT_JS = """el => {
  const t = el.closest('button, input[type=submit], input[type=image]');
  if (!t || !t.form) return null;
  const type = (t.getAttribute('type') || 'submit').toLowerCase();
  if (type !== 'submit' && type !== 'image') return null;
  return {form_action: t.form.action, method: (t.form.method || 'get').toLowerCase()};
}"""
_ENTER_SUBMITS_JS = """() => {
  const el = document.activeElement;
  if (!el || !el.form || el.tagName === 'TEXTAREA') return null;
  return {form_action: el.form.action, method: (el.form.method || 'get').toLowerCase()};
}"""
_CSS_PATH_JS = """el => {
  const parts = [];
  while (el && el.nodeType === 1 && el !== document.documentElement) {
    if (el.id) { parts.unshift('#' + CSS.escape(el.id)); break; }
    let sel = el.localName;
    const same = el.parentElement ? [...el.parentElement.children].filter(c => c.localName === el.localName) : [];
    if (same.length > 1) sel += ':nth-of-type(' + (same.indexOf(el) + 1) + ')';
    parts.unshift(sel); el = el.parentElement;
  }
  return parts.join(' > ');
}"""
_MODIFIERS = {"alt": "Alt", "control": "Control", "ctrl": "Control", "meta": "Meta", "cmd": "Meta", "shift": "Shift"}


@dataclass
class _Target:
    locator: Any | None
    point: tuple[float, float] | None
    code: str
    label: str


def _q(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def text_expression(text: str) -> str:
    """The Python expression of `text` for the replay script: `{{secret:NAME}}` becomes an environment lookup."""
    pieces = re.split(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", text)
    parts = []
    for i, piece in enumerate(pieces):
        if i % 2:
            parts.append(f'os.environ["LLLM_SECRET_{piece}"]')
        elif piece:
            parts.append(_q(piece))
    return " + ".join(parts) or '""'


async def _locator_code(locator: Any, ref: str) -> str:
    try:
        return "page." + str(await locator.normalize())
    except Exception:  # noqa: BLE001 - fall back to a CSS path
        try:
            return f"page.locator({_q('css=' + await locator.evaluate(_CSS_PATH_JS))})"
        except Exception:  # noqa: BLE001
            return f"page.locator({_q('aria-ref=' + ref)})  # not replayable: a snapshot ref"


async def _resolve(s: BrowserSession, ref: str | None, selector: str | None, x: float | None, y: float | None,
                   *, what: str = "target") -> _Target:
    given = [ref is not None, selector is not None, x is not None or y is not None]
    if sum(given) != 1:
        raise UsageError(
            f"give exactly one {what}: `ref` (from the snapshot, e.g. 'e12'), `selector`, or `x` and `y`; got "
            f"ref={ref!r}, selector={selector!r}, x={x!r}, y={y!r}"
        )
    page = s.page
    if ref is not None:
        locator = await ref_locator(page, ref, timeout_s=s.config.action_timeout_s)
        return _Target(locator, None, await _locator_code(locator, ref), f"ref={ref}")
    if selector is not None:
        return _Target(page.locator(selector), None, f"page.locator({_q(selector)})", f"selector={selector}")
    if x is None or y is None:
        raise UsageError(f"coordinates need both `x` and `y`; got x={x!r}, y={y!r}")
    vp = s.config.viewport
    if not (0 <= x <= vp.width and 0 <= y <= vp.height):
        raise UsageError(f"({x}, {y}) is outside the {vp.width}x{vp.height} viewport; scroll first")
    return _Target(None, (float(x), float(y)), "page.mouse", f"x={x},y={y}")


async def _confirm(s: BrowserSession, request: ConfirmRequest) -> None:
    if not await s.confirm_async(request):
        raise ActionRefused(
            f"the confirmation hook refused this {request.kind} ({request.action} {request.target or ''}".rstrip()
            + "); do something else or finish and explain why",
            kind=request.kind,
            target=request.target,
        )


async def _check_submit(s: BrowserSession, t: _Target, action: str) -> None:
    try:
        if t.locator is not None:
            info = await t.locator.first.evaluate(_SUBMIT_JS, timeout=s.config.action_timeout_s * 1000)
        else:
            x, y = t.point or (0, 0)
            info = await s.page.evaluate(
                f"([x, y]) => {{ const el = document.elementFromPoint(x, y); return el ? ({_SUBMIT_JS})(el) : null; }}",
                [x, y],
            )
    except Exception:  # noqa: BLE001 - an element we cannot inspect is acted on without the hook
        return
    if info:
        await _confirm(s, ConfirmRequest("submit", action, target=t.label, url=s.page.url, detail=info))


def _normalise_url(url: str) -> str:
    url = url.strip()
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url):
        url = "https://" + url
    return url


async def check_navigation(s: BrowserSession, url: str, action: str) -> None:
    """Refuse a navigation outside the policy, or ask the hook when only the allowlist says no."""
    verdict = await asyncio.get_running_loop().run_in_executor(None, s.policy.check_url, url)
    if verdict.allowed:
        return
    if verdict.off_allowlist:
        request = ConfirmRequest("navigation", action, target=url, url=url, detail={"reason": verdict.reason})
        if await s.confirm_async(request):
            parts = urlsplit(url)
            s.policy.allow_host(parts.hostname or "", parts.port)
            again = await asyncio.get_running_loop().run_in_executor(None, s.policy.check_url, url)
            if again.allowed:
                return
            verdict = again
    s._on_blocked(url, verdict.reason)
    raise BlockedNavigation(f"navigation to {s.secrets.redact(url)!r} was blocked: {verdict.reason}",
                            url=s.secrets.redact(url), reason=verdict.reason)


async def _goto(s: BrowserSession, page: Any, url: str) -> str:
    seen = s.downloads_started
    try:
        response = await page.goto(url, wait_until="domcontentloaded")
    except Exception as exc:  # playwright.Error; a URL that is a file download is not a failure
        if "Download is starting" in str(exc):
            if s.downloads_started == seen:
                # goto can fail before the page's "download" event arrives: wait for it, so the save is
                # pending when the action settles and the next observation reports the file.
                try:
                    await page.wait_for_event("download", timeout=s.config.navigation_timeout_s * 1000)
                except Exception:  # noqa: BLE001 - reported as no download in the observation
                    pass
                await asyncio.sleep(0)
            return " (the URL is a file: it started a download)"
        raise
    status = f" (HTTP {response.status})" if response is not None and response.status >= 400 else ""
    return status


# -- navigation ----------------------------------------------------------------------------------------------


async def navigate(s: BrowserSession, *, url: str) -> ActionOutcome:
    """Open a URL in the current tab."""
    url = _normalise_url(s.secrets.fill(url))
    await check_navigation(s, url, "navigate")
    status = await _goto(s, s.page, url)
    shown = s.secrets.redact(url)
    return ActionOutcome(f"navigated to {shown}{status}", [f"page.goto({_q(shown)})"], target=shown)


async def back(s: BrowserSession) -> ActionOutcome:
    """Go back in the current tab's history."""
    response = await s.page.go_back(wait_until="domcontentloaded")
    return ActionOutcome("went back" if response is not None else "there was no page to go back to", ["page.go_back()"])


async def forward(s: BrowserSession) -> ActionOutcome:
    """Go forward in the current tab's history."""
    response = await s.page.go_forward(wait_until="domcontentloaded")
    return ActionOutcome("went forward" if response is not None else "there was no page to go forward to",
                         ["page.go_forward()"])


async def reload(s: BrowserSession) -> ActionOutcome:
    """Reload the current tab."""
    await s.page.reload(wait_until="domcontentloaded")
    return ActionOutcome("reloaded the page", ["page.reload()"])


# -- pointer -------------------------------------------------------------------------------------------------


def _mods(modifiers: list[str] | None) -> list[str]:
    out = []
    for m in modifiers or []:
        key = _MODIFIERS.get(m.lower())
        if key is None:
            raise UsageError(f"unknown modifier {m!r}; use Alt, Control, Meta or Shift")
        out.append(key)
    return out


async def click(s: BrowserSession, *, ref: str | None = None, selector: str | None = None, x: float | None = None,
                y: float | None = None, button: Literal["left", "right", "middle"] = "left",
                modifiers: list[str] | None = None, double: bool = False) -> ActionOutcome:
    """Click (or double-click) an element or a point."""
    t = await _resolve(s, ref, selector, x, y)
    name = "double_click" if double else "click"
    await _check_submit(s, t, name)
    mods = _mods(modifiers)
    opts = ""
    if button != "left":
        opts += f"button={_q(button)}"
    if mods:
        opts += (", " if opts else "") + f"modifiers={mods!r}"
    if t.locator is not None:
        method = t.locator.dblclick if double else t.locator.click
        await method(button=button, modifiers=mods or None)
        code = f"{t.code}.{'dblclick' if double else 'click'}({opts})"
    else:
        x0, y0 = t.point  # type: ignore[misc]
        for m in mods:
            await s.page.keyboard.down(m)
        try:
            await s.page.mouse.click(x0, y0, button=button, click_count=2 if double else 1)
        finally:
            for m in mods:
                await s.page.keyboard.up(m)
        code = f"page.mouse.click({x0}, {y0}" + (f", button={_q(button)}" if button != "left" else "") + \
            (", click_count=2" if double else "") + ")"
    return ActionOutcome(f"{'double-clicked' if double else 'clicked'} {t.label}", [code], target=t.label)


async def double_click(s: BrowserSession, **kwargs: Any) -> ActionOutcome:
    """Double-click an element or a point."""
    return await click(s, double=True, **kwargs)


async def hover(s: BrowserSession, *, ref: str | None = None, selector: str | None = None, x: float | None = None,
                y: float | None = None) -> ActionOutcome:
    """Move the mouse over an element or a point."""
    t = await _resolve(s, ref, selector, x, y)
    if t.locator is not None:
        await t.locator.hover()
        code = f"{t.code}.hover()"
    else:
        await s.page.mouse.move(*t.point)  # type: ignore[misc]
        code = f"page.mouse.move({t.point[0]}, {t.point[1]})"  # type: ignore[index]
    return ActionOutcome(f"hovered over {t.label}", [code], target=t.label)


async def drag(s: BrowserSession, *, ref: str | None = None, selector: str | None = None, x: float | None = None,
               y: float | None = None, to_ref: str | None = None, to_selector: str | None = None,
               to_x: float | None = None, to_y: float | None = None) -> ActionOutcome:
    """Drag from one element or point to another."""
    src = await _resolve(s, ref, selector, x, y, what="source")
    dst = await _resolve(s, to_ref, to_selector, to_x, to_y, what="destination (to_ref, to_selector or to_x/to_y)")
    if src.locator is not None and dst.locator is not None:
        await src.locator.drag_to(dst.locator)
        code = [f"{src.code}.drag_to({dst.code})"]
    else:
        async def center(t: _Target) -> tuple[float, float]:
            if t.point is not None:
                return t.point
            box = await t.locator.bounding_box() if t.locator is not None else None
            if box is None:
                raise BrowserError(f"{t.label} is not visible, so it cannot be dragged; scroll to it first")
            return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

        (x0, y0), (x1, y1) = await center(src), await center(dst)
        mouse = s.page.mouse
        await mouse.move(x0, y0)
        await mouse.down()
        await mouse.move(x1, y1, steps=10)
        await mouse.up()
        code = [f"page.mouse.move({x0}, {y0})", "page.mouse.down()", f"page.mouse.move({x1}, {y1}, steps=10)",
                "page.mouse.up()"]
    return ActionOutcome(f"dragged {src.label} to {dst.label}", code, target=f"{src.label} -> {dst.label}")


async def scroll(s: BrowserSession, *, direction: Literal["up", "down", "left", "right"] = "down", amount: int = 600,
                 ref: str | None = None, selector: str | None = None) -> ActionOutcome:
    """Scroll the page (or bring an element into view)."""
    if ref is not None or selector is not None:
        t = await _resolve(s, ref, selector, None, None)
        await t.locator.scroll_into_view_if_needed()  # type: ignore[union-attr]
        return ActionOutcome(f"scrolled {t.label} into view", [f"{t.code}.scroll_into_view_if_needed()"],
                             target=t.label)
    dx, dy = {"up": (0, -amount), "down": (0, amount), "left": (-amount, 0), "right": (amount, 0)}[direction]
    await s.page.mouse.wheel(dx, dy)
    # wheel() does not wait for the scroll: two animation frames let it land (and scroll handlers run)
    await s.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return ActionOutcome(f"scrolled {direction} by {amount}px", [f"page.mouse.wheel({dx}, {dy})"])


# -- keyboard and forms ------------------------------------------------------------------------------------


async def type_text(s: BrowserSession, *, text: str, ref: str | None = None, selector: str | None = None,
                    x: float | None = None, y: float | None = None, clear: bool = True,
                    submit: bool = False) -> ActionOutcome:
    """Type text into a field (replacing its content unless `clear` is false); Enter after it if `submit`."""
    t = await _resolve(s, ref, selector, x, y)
    value = s.secrets.fill(text)
    expr = text_expression(text)
    code: list[str] = []
    if t.locator is not None:
        if clear:
            await t.locator.fill(value)
            code.append(f"{t.code}.fill({expr})")
        else:
            await t.locator.press_sequentially(value)
            code.append(f"{t.code}.press_sequentially({expr})")
    else:
        await s.page.mouse.click(*t.point)  # type: ignore[misc]
        await s.page.keyboard.type(value)
        code += [f"page.mouse.click({t.point[0]}, {t.point[1]})", f"page.keyboard.type({expr})"]  # type: ignore[index]
    if submit:
        info = await s.page.evaluate(_ENTER_SUBMITS_JS)
        if info:
            await _confirm(s, ConfirmRequest("submit", "type_text", target=t.label, url=s.page.url, detail=info))
        await s.page.keyboard.press("Enter")
        code.append('page.keyboard.press("Enter")')
    shown = s.secrets.redact(value)
    return ActionOutcome(f"typed {shown!r} into {t.label}" + (" and pressed Enter" if submit else ""), code,
                         target=t.label)


async def press(s: BrowserSession, *, keys: str, ref: str | None = None, selector: str | None = None) -> ActionOutcome:
    """Press keys: one key or a combination (`Control+A`), several separated by spaces (`Tab Tab Enter`)."""
    sequence = keys.split()
    if not sequence:
        raise UsageError("press needs `keys`, e.g. 'Enter', 'Control+A' or 'Tab Tab Enter'")
    code: list[str] = []
    label = None
    if ref is not None or selector is not None:
        t = await _resolve(s, ref, selector, None, None)
        await t.locator.focus()  # type: ignore[union-attr]
        code.append(f"{t.code}.focus()")
        label = t.label
    for combo in sequence:
        if combo.split("+")[-1] == "Enter":
            info = await s.page.evaluate(_ENTER_SUBMITS_JS)
            if info:
                await _confirm(s, ConfirmRequest("submit", "press", target=label, url=s.page.url, detail=info))
        await s.page.keyboard.press(combo)
        code.append(f"page.keyboard.press({_q(combo)})")
    return ActionOutcome(f"pressed {keys}" + (f" in {label}" if label else ""), code, target=label or keys)


async def select_option(s: BrowserSession, *, values: list[str], ref: str | None = None,
                        selector: str | None = None) -> ActionOutcome:
    """Choose options (by label or value) in a `<select>`."""
    t = await _resolve(s, ref, selector, None, None)
    chosen = await t.locator.select_option(values)  # type: ignore[union-attr]
    if not chosen:
        raise BrowserError(f"no option of {t.label} matches {values!r}; look at the snapshot for the option labels")
    return ActionOutcome(f"selected {values!r} in {t.label}", [f"{t.code}.select_option({values!r})"], target=t.label)


async def upload(s: BrowserSession, *, paths: list[str], ref: str | None = None,
                 selector: str | None = None) -> ActionOutcome:
    """Set the files of a file input, from the agent's workspace."""
    files = [s.workspace_file(p) for p in paths]
    t = await _resolve(s, ref, selector, None, None)
    await _confirm(s, ConfirmRequest("upload", "upload", target=t.label, url=s.page.url,
                                     detail={"files": [str(f) for f in files]}))
    await t.locator.set_input_files(files)  # type: ignore[union-attr]
    names = [f.name for f in files]
    return ActionOutcome(f"attached {', '.join(names)} to {t.label}",
                         [f"{t.code}.set_input_files({[str(f) for f in files]!r})"], target=t.label)


async def wait(s: BrowserSession, *, text: str | None = None, gone: str | None = None,
               seconds: float | None = None) -> ActionOutcome:
    """Wait until a text appears, a text is gone, or some seconds pass (at most 30)."""
    if sum(v is not None for v in (text, gone, seconds)) != 1:
        raise UsageError("wait needs exactly one of `text`, `gone` or `seconds`")
    if seconds is not None:
        seconds = min(max(0.0, seconds), 30.0)
        await asyncio.sleep(seconds)
        return ActionOutcome(f"waited {seconds}s", [f"page.wait_for_timeout({int(seconds * 1000)})"])
    needle = text if text is not None else gone
    state = "visible" if text is not None else "hidden"
    await s.page.get_by_text(needle).first.wait_for(state=state)
    return ActionOutcome(f"{needle!r} is {'on the page' if text is not None else 'gone'}",
                         [f"page.get_by_text({_q(needle)}).first.wait_for(state={_q(state)})"], target=needle)


# -- tabs ----------------------------------------------------------------------------------------------------


async def tabs(s: BrowserSession) -> ActionOutcome:
    """List the open tabs."""
    rows = []
    for i, page in enumerate(s.pages):
        try:
            title = await page.title()
        except Exception:  # noqa: BLE001
            title = ""
        rows.append(f"[{i}] {title!r} {s.secrets.redact(page.url)}" + (" (current)" if i == s.current else ""))
    return ActionOutcome("open tabs:\n" + "\n".join(rows), [])


async def open_tab(s: BrowserSession, *, url: str | None = None) -> ActionOutcome:
    """Open a new tab (at a URL) and make it current."""
    if url is not None:
        url = _normalise_url(s.secrets.fill(url))
        await check_navigation(s, url, "open_tab")
    page = await s.new_tab()
    code = ["page = context.new_page()"]
    if url is not None:
        await _goto(s, page, url)
        code.append(f"page.goto({_q(s.secrets.redact(url))})")
    return ActionOutcome(f"opened tab {s.current}" + (f" at {s.secrets.redact(url)}" if url else ""), code)


async def switch_tab(s: BrowserSession, *, index: int) -> ActionOutcome:
    """Make another tab current."""
    if not 0 <= index < len(s.pages):
        raise UsageError(f"there is no tab {index}; open tabs are 0..{len(s.pages) - 1} (see tabs())", index=index)
    s.current = index
    await s.page.bring_to_front()
    return ActionOutcome(f"switched to tab {index}", [f"page = context.pages[{index}]", "page.bring_to_front()"])


async def close_tab(s: BrowserSession, *, index: int | None = None) -> ActionOutcome:
    """Close a tab (default: the current one); the last tab left becomes current."""
    index = s.current if index is None else index
    if not 0 <= index < len(s.pages):
        raise UsageError(f"there is no tab {index}; open tabs are 0..{len(s.pages) - 1}", index=index)
    if len(s.pages) == 1:
        raise UsageError("this is the last open tab; navigate it instead of closing it")
    page = s.pages[index]
    await page.close()
    if page in s.pages:
        s.pages.remove(page)
    s.current = min(s.current, len(s.pages) - 1)
    s.events[:] = [e for e in s.events if e != f"tab {index} closed"]
    return ActionOutcome(f"closed tab {index}; tab {s.current} is current",
                         [f"context.pages[{index}].close()", f"page = context.pages[{s.current}]"])


async def screenshot(s: BrowserSession) -> ActionOutcome:
    """Take a screenshot of the viewport (the toolset attaches it to the observation)."""
    return ActionOutcome("took a screenshot", ['page.screenshot(path="screenshot.png")'])


ACTIONS: dict[str, Callable[..., Awaitable[ActionOutcome]]] = {
    fn.__name__: fn
    for fn in (navigate, back, forward, reload, click, double_click, hover, drag, scroll, type_text, press,
               select_option, upload, wait, tabs, open_tab, switch_tab, close_tab, screenshot)
}
"""Every action by name (what `BrowserSession.perform(name, ...)` runs)."""
