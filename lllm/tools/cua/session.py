"""`BrowserSession`: one browser context for one agent in one tactic call, and everything that happens in it.

A session owns a Playwright browser context (its own cookies and storage) in the driver's shared Chromium,
an egress proxy that enforces its URL policy, its tabs, and the log of the actions it ran. It is created
cheaply and opened by `start()` (or the first action); `close()` ends the context, the proxy and every tab.
Every public method can be called from any thread: the work runs on the driver's thread (`_driver.py`).

Events the model must hear about (a dialog handled by policy, a pop-up, a blocked request, a finished
download) are collected as they happen and reported with the next observation.

Playwright exceptions are translated here, at one boundary (`_translate`), into the `BrowserError` tree.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lllm.records import IMAGE_BYTES, BrowserActionRecord, Tracer, null_tracer
from lllm.errors import (ActionRefused, ActionTimeout, BlockedNavigation, BrowserError, BrowserLaunchError, LLLMError,
                         UsageError)
from lllm.tools.cua._records import ActionLog, ActionOutcome
from lllm.tools.cua.config import LAUNCH_ARGS, BrowserConfig
from lllm.tools.cua.safety import ConfirmHook, ConfirmRequest, Secrets, UrlPolicy, load_confirm_hook
from lllm.tools.cua.snapshot import CappedText, cap_snapshot, find_lines, take_snapshot

__all__ = ["SETTLE_S", "ActionLog", "BrowserSession", "Observation", "SessionState"]

SETTLE_S = 0.0
"""Extra seconds a click or key press waits for events before the observation. None are needed by default:
Playwright's click waits for the navigation (or download) it starts, pop-ups are awaited through the watch
script below, and anything later is reported with the next observation."""
_EVENTFUL = {"click", "double_click", "press"}
# Counts the pop-ups a page opens (window.open, links and forms with a target, modifier clicks on links), so
# an action that opened one waits for its tab instead of guessing how long to wait.
_POPUP_WATCH_JS = """(() => {
  const mark = () => { window.__lllmPopups = (window.__lllmPopups || 0) + 1; };
  const open = window.open;
  window.open = function (...args) { mark(); return open.apply(this, args); };
  const watch = e => {
    const el = e.target && e.target.closest ? e.target.closest('a[href], area[href]') : null;
    const t = el && el.target ? el.target.toLowerCase() : '';
    if (el && ((t && !['_self', '_parent', '_top'].includes(t)) || e.ctrlKey || e.metaKey || e.shiftKey || e.button === 1)) mark();
  };
  document.addEventListener('click', watch, true);
  document.addEventListener('auxclick', watch, true);
  document.addEventListener('submit', e => {
    const t = (e.target.getAttribute('target') || '').toLowerCase();
    if (t && !['_self', '_parent', '_top'].includes(t)) mark();
  }, true);
})();"""
_POPUP_TAKE_JS = "() => { const n = window.__lllmPopups || 0; window.__lllmPopups = 0; return n; }"


_JPEG_QUALITY = 70
_MAX_TEXT_NODES = 20_000
# Every field value and text node of the page (open shadow roots included) with its box in the viewport, to
# find where a secret shows. The script gets no secret: only the page's own text comes back.
_TEXT_BOXES_JS = """(limit) => {
  const out = [];
  const box = r => [r.left, r.top, r.width, r.height];
  const visit = root => {
    for (const el of root.querySelectorAll('input, textarea, select')) {
      if (out.length >= limit) return;
      const value = el.value == null ? '' : String(el.value);
      if (value) out.push([box(el.getBoundingClientRect()), value]);
    }
    const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
    for (let node = walk.nextNode(); node && out.length < limit; node = walk.nextNode()) {
      if (node.nodeType === Node.ELEMENT_NODE) { if (node.shadowRoot) visit(node.shadowRoot); continue; }
      const text = node.nodeValue;
      if (!text || !text.trim() || !node.parentElement) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      out.push([box(range.getBoundingClientRect()), text]);
    }
  };
  visit(document);
  return out;
}"""


def _black_out(png: bytes, boxes: list[list[float]]) -> bytes:
    """`png` with each `[x, y, width, height]` box (CSS pixels, a margin added) painted black, as a JPEG."""
    import io

    from PIL import Image, ImageDraw

    image = Image.open(io.BytesIO(png)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for x, y, w, h in boxes:
        draw.rectangle((x - 3, y - 3, x + w + 3, y + h + 3), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()


@dataclass
class PageState:
    """The page after an action, as its log record keeps it."""

    url: str | None = None
    """The current tab's URL (secrets redacted)."""
    screenshot: bytes | None = None
    """A JPEG of the viewport, secrets blacked out."""
    note: str | None = None
    """Why there is no screenshot, when one was wanted."""


class SessionState(enum.Enum):
    """The lifecycle of a session."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class Observation:
    """What the model sees after an action."""

    text: str
    """The tab line, the events since the last observation and the capped snapshot (secrets redacted)."""
    url: str
    """The current tab's URL."""
    title: str
    """The current tab's title."""
    truncated: bool = False
    """True when the snapshot was cut to the budget."""
    events: list[str] = field(default_factory=list)
    """The events reported in `text`."""
    screenshot: bytes | None = None
    """A PNG of the viewport, when asked for."""


class BrowserSession:
    """A browser context with its tabs, policy, proxy and action log.

    Args:
        config: A `BrowserConfig` or a `computer_use:` block (validated).
        workdir: Where downloads are saved and uploads are taken from (the agent's per-call folder).
        tracer: Receives one `BrowserActionRecord` per action.
        agent: The agent's name, for the records.
        confirm: The confirmation hook (a callable or a `module:function` path); default: `config.confirm`,
            else allow everything but leaving the allowlist.
        secrets: Extra secrets (NAME -> value) besides `config.secrets`.
        driver: The Playwright driver (default: the shared one for this Chromium).
    """

    def __init__(
        self,
        config: BrowserConfig | dict[str, Any] | None = None,
        *,
        workdir: str | Path | None = None,
        tracer: Tracer | None = None,
        agent: str | None = None,
        confirm: ConfirmHook | str | None = None,
        secrets: dict[str, str] | None = None,
        driver: Any = None,
    ) -> None:
        self.config = BrowserConfig.from_block(config)
        self.workdir = Path(workdir) if workdir is not None else None
        self.tracer: Tracer = tracer or null_tracer
        self.agent = agent
        self.confirm_hook = load_confirm_hook(confirm if confirm is not None else self.config.confirm)
        self._extra_secrets = dict(secrets or {})
        self.secrets = Secrets()
        self.policy = UrlPolicy.from_config(self.config)
        self._driver = driver
        self.state = SessionState.NEW
        self.log: list[ActionLog] = []
        """Every action run so far, in order (the replay script is made from it)."""
        self.events: list[str] = []
        self.blocked: list[tuple[str, str]] = []
        """Every (url, reason) refused so far."""
        self.dialogs: list[dict[str, str]] = []
        """Every JavaScript dialog seen: type, message, what was done."""
        self.downloads: list[Path] = []
        """Files saved to the workdir."""
        self.pages: list[Any] = []
        self.current = 0
        self.context: Any = None
        self._proxy: Any = None
        self._pending: set[asyncio.Task[Any]] = set()
        self.downloads_started = 0
        """Downloads the pages of this session have started (saved, refused or failed)."""
        self._start_lock = threading.Lock()
        self._auto_code: list[str] = []
        self._opening_own = False  # True while the session itself opens a tab (not a pop-up)
        self._popup_seen: asyncio.Event | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def driver(self) -> Any:
        """The Playwright driver this session runs on."""
        if self._driver is None:
            from lllm.tools.cua._driver import shared_driver

            self._driver = shared_driver(
                executable_path=self.config.chromium, headless=self.config.headless, args=LAUNCH_ARGS
            )
        return self._driver

    def start(self) -> BrowserSession:
        """Open the browser context (and the start URL). Called by the first action when not called before.

        Raises:
            UsageError: The session was closed.
            BrowserLaunchError: Chromium did not start, or the session's context or egress proxy could not open
                (an infrastructure error: the agent's call ends with it).
            BlockedNavigation: The start URL is not allowed.
        """
        if self.state is SessionState.CLOSED:
            raise UsageError("this browser session is closed; the agent gets a new one in its next tactic call")
        if self.state is SessionState.OPEN:
            return self
        with self._start_lock:
            if self.state is not SessionState.NEW:
                return self.start()
            values = self.config.secret_values()
            values.update(self._extra_secrets)
            self.secrets = Secrets(values)
            try:
                self.driver.run(self._open, timeout=120)
            except (BrowserLaunchError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - opening the session is machinery, whatever broke
                error = _translate(exc)
                raise BrowserLaunchError(f"the browser session could not open: {type(error).__name__}: {error}",
                                         executable_path=self.config.chromium) from exc
            self.state = SessionState.OPEN
        if self.config.start_url:
            self.perform("navigate", url=self.config.start_url)
        return self

    async def _open(self) -> None:
        try:
            await self._open_context()
        except BaseException:
            await self._close()  # undo a half-finished start before re-raising
            raise

    async def _open_context(self) -> None:
        from lllm.tools.cua._proxy import EgressProxy

        browser = await self.driver.browser()
        self._proxy = EgressProxy(self.policy, on_blocked=self._on_blocked)
        await self._proxy.start()
        vp = self.config.viewport
        self.context = await browser.new_context(
            viewport={"width": vp.width, "height": vp.height},
            accept_downloads=True,
            service_workers="block",
            proxy={"server": self._proxy.server_url, "bypass": "<-loopback>"},
        )
        self.context.set_default_timeout(self.config.action_timeout_s * 1000)
        self.context.set_default_navigation_timeout(self.config.navigation_timeout_s * 1000)
        await self.context.route("**/*", self._route)
        await self.context.add_init_script(_POPUP_WATCH_JS)
        self.context.on("page", self._on_new_page)
        await self.new_tab()

    async def new_tab(self) -> Any:
        """Open a tab the session asked for (not a pop-up) and make it current (driver loop)."""
        self._opening_own = True
        try:
            page = await self.context.new_page()
        finally:
            self._opening_own = False
        self._adopt(page)
        self.current = self.pages.index(page)
        return page

    def close(self) -> None:
        """Close every tab, the context and the proxy. Idempotent; safe from any thread."""
        if self.state is not SessionState.OPEN:
            self.state = SessionState.CLOSED
            return
        self.state = SessionState.CLOSED
        try:
            self.driver.run(self._close, timeout=30)
        except LLLMError:
            pass

    async def _close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self.context is not None:
            try:
                await self.context.close()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        if self._proxy is not None:
            await self._proxy.close()

    def __enter__(self) -> BrowserSession:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- events (run on the driver loop) --------------------------------------------------------------------

    def _adopt(self, page: Any) -> None:
        if page in self.pages:
            return
        self.pages.append(page)
        page.on("dialog", self._on_dialog)
        page.on("download", self._on_download)
        page.on("close", self._on_page_close)

    def _on_new_page(self, page: Any) -> None:
        if page in self.pages or self._opening_own:
            return
        self._adopt(page)
        self.current = len(self.pages) - 1
        if self._popup_seen is not None:
            self._popup_seen.set()
        self._track(self._wait_loaded(page))
        opener = "a pop-up (window.open or a link to a new tab)"
        self.events.append(f"{opener} opened tab {self.current}: {self.secrets.redact(page.url)}; it is now the current tab")
        self._auto_code.append(f"page = _wait_for_tab(context, {self.current})  # the pop-up became the current tab")

    def _on_page_close(self, page: Any) -> None:
        if page in self.pages:
            index = self.pages.index(page)
            self.pages.remove(page)
            if self.current >= len(self.pages):
                self.current = max(0, len(self.pages) - 1)
            self.events.append(f"tab {index} closed")

    async def _on_dialog(self, dialog: Any) -> None:
        accept = self.config.dialogs == "accept"
        kind, message = dialog.type, self.secrets.redact(dialog.message)
        try:
            if accept:
                await dialog.accept(self.config.prompt_text if kind == "prompt" else None)
            else:
                await dialog.dismiss()
        except Exception:  # noqa: BLE001 - the page may have gone
            pass
        done = "accepted" if accept else "dismissed"
        self.dialogs.append({"type": kind, "message": message, "action": done})
        self.events.append(f"a JavaScript {kind} dialog said {message!r}; it was {done} (dialog policy: {self.config.dialogs})")

    def _on_blocked(self, url: str, reason: str) -> None:
        url = self.secrets.redact(url)
        self.blocked.append((url, reason))
        event = f"blocked a request to {url}: {reason}"
        if event not in self.events:  # once per observation (the route and the proxy may both refuse it)
            self.events.append(event)

    async def _route(self, route: Any) -> None:
        url = route.request.url
        try:
            verdict = await asyncio.get_running_loop().run_in_executor(None, self.policy.check_url, url)
            if verdict.allowed:
                await route.continue_()
            else:
                self._on_blocked(url, verdict.reason)
                await route.abort("blockedbyclient")
        except Exception:  # noqa: BLE001 - the page closed under the route
            pass

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _wait_loaded(self, page: Any) -> None:
        try:
            await page.wait_for_load_state("domcontentloaded", timeout=self.config.navigation_timeout_s * 1000)
        except Exception:  # noqa: BLE001 - a pop-up that does not load is shown as it is
            pass

    def _on_download(self, download: Any) -> None:
        self.downloads_started += 1
        self._track(self._save_download(download))

    async def _save_download(self, download: Any) -> None:
        name = Path(download.suggested_filename or "download").name or "download"
        request = ConfirmRequest("download", "download", target=name, url=download.url)
        allowed = await self.confirm_async(request)
        if not allowed or self.workdir is None:
            await download.cancel()
            why = "the confirmation hook refused it" if not allowed else "the session has no workdir to save it in"
            self.events.append(f"download of {name} was cancelled: {why}")
            return
        folder = self.workdir / "downloads"
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / name
        stem, suffix, n = dest.stem, dest.suffix, 1
        while dest.exists():
            dest, n = folder / f"{stem}-{n}{suffix}", n + 1
        try:
            await download.save_as(dest)
        except Exception as exc:  # noqa: BLE001 - a failed download is reported, not raised
            self.events.append(f"download of {name} failed: {str(exc).splitlines()[0]}")
            return
        size = dest.stat().st_size
        if size > self.config.max_download_bytes:
            dest.unlink()
            self.events.append(f"download of {name} was deleted: {size:,} bytes is over max_download_bytes")
            return
        self.downloads.append(dest)
        rel = dest.relative_to(self.workdir)
        self.events.append(f"downloaded {name} ({size:,} bytes) to {rel} in the workspace")

    async def confirm_async(self, request: ConfirmRequest) -> bool:
        """Ask the confirmation hook (in a worker thread, so a slow hook does not stall the browser)."""
        return bool(await asyncio.get_running_loop().run_in_executor(None, self.confirm_hook, request))

    # -- helpers for actions (driver loop) ------------------------------------------------------------------

    @property
    def page(self) -> Any:
        """The current tab's Playwright page (driver loop only)."""
        if not self.pages:
            raise BrowserError("the session has no open tab; call open_tab(url) to open one")
        return self.pages[self.current]

    def workspace_file(self, path: str) -> Path:
        """Resolve a path inside the workdir (uploads), refusing escapes.

        Raises:
            UsageError: No workdir, the path leaves it, or the file does not exist.
        """
        if self.workdir is None:
            raise UsageError("this browser session has no workdir, so there is nothing to upload from")
        root = self.workdir.resolve()
        full = (root / path).resolve()
        if not full.is_relative_to(root):
            raise UsageError(f"upload path {path!r} is outside the agent's workspace; give a path inside it", path=path)
        if not full.is_file():
            raise UsageError(f"no file {path!r} in the agent's workspace", path=path)
        return full

    async def settle(self, *, pause: float = 0.0) -> None:
        """Let events of the last action arrive (pop-ups, downloads) and finish pending downloads.

        Args:
            pause: Seconds to wait first for events a click or a key may start (a pop-up, a download).
        """
        await asyncio.sleep(pause)
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=self.config.navigation_timeout_s)

    # -- actions ---------------------------------------------------------------------------------------------

    def perform(self, action: str, **kwargs: Any) -> ActionOutcome:
        """Run one action (see `lllm.tools.cua.actions.ACTIONS`), log it and trace it.

        Raises:
            UsageError: An unknown action or bad arguments.
            BlockedNavigation, ActionRefused, StaleRef, ActionTimeout, BrowserError: the action failed; the
                session stays usable.
        """
        from lllm.tools.cua.actions import ACTIONS

        fn = ACTIONS.get(action)
        if fn is None:
            raise UsageError(f"unknown browser action {action!r}; known: {sorted(ACTIONS)}", action=action)
        if self.state is not SessionState.OPEN:
            self.start()
        started, wall = time.perf_counter(), time.time()
        target = _describe_target(kwargs)
        limit = max(self.config.action_timeout_s, self.config.navigation_timeout_s) * 2 + 10
        try:
            outcome, page = self.driver.run(self._run_action, fn, kwargs, timeout=limit)
        except BaseException as exc:
            error = _translate(exc)
            if isinstance(error, LLLMError):
                self._redact_error(error)
            status = _status_of(error)
            page = self._page_after_failure(error)
            self._record(action, target, status, started, wall, [], self.secrets.redact(str(error)), page=page)
            if error is exc:
                raise
            raise error from exc
        outcome.message = self.secrets.redact(outcome.message)
        self._record(action, outcome.target or target, "ok", started, wall, outcome.code, None, outcome.message,
                     page=page)
        return outcome

    def _redact_error(self, error: LLLMError) -> None:
        """Secrets never leave in an error: its message and text facts (a StaleRef's snapshot) are redacted."""
        error.message = self.secrets.redact(error.message)
        error.args = (error.message,)
        for key, value in list(error.facts.items()):
            if isinstance(value, str):
                error.facts[key] = self.secrets.redact(value)
                setattr(error, key, error.facts[key])

    async def _run_action(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[ActionOutcome, PageState]:
        self._flush_auto_code()
        self._popup_seen = asyncio.Event()
        before = self.page if self.pages else None
        outcome = await fn(self, **kwargs)
        eventful = fn.__name__ in _EVENTFUL or (fn.__name__ == "type_text" and kwargs.get("submit"))
        if eventful and before is not None:
            await self._await_popup(before)
        await self.settle(pause=SETTLE_S if eventful else 0.0)
        outcome.code += self._auto_code
        self._auto_code = []
        return outcome, await self._page_state()

    # -- what the log keeps of the page after an action -----------------------------------------------------

    @property
    def _recording(self) -> bool:
        return self.tracer is not null_tracer

    async def _page_state(self) -> PageState:
        """The current tab's URL and (with `record_screenshots`) a JPEG of its viewport, secrets hidden; for the
        action's log record. Never raises: a page that cannot be captured leaves a note instead."""
        if not self._recording or not self.pages:
            return PageState()
        page = self.page
        state = PageState(url=self.secrets.redact(page.url))
        if not self.config.record_screenshots:
            return state
        try:
            state.screenshot = await self._screenshot_for_record(page)
        except Exception as exc:  # noqa: BLE001 - the page navigated or closed mid-capture; the record says so
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            state.note = f"no screenshot: {self.secrets.redact(first)[:300]}"
        return state

    async def _screenshot_for_record(self, page: Any) -> bytes:
        """A JPEG of the viewport with every field and text that shows one of the session's secrets blacked out.

        The page's text and field values (with their boxes) are read by a script that is given no secret -- a
        page's own scripts can watch what a script in its main world does with its arguments -- and matched
        here; the boxes are painted over on the image, so the page is never changed for the picture."""
        timeout = min(self.config.action_timeout_s, 10.0) * 1000
        boxes: list[list[float]] = []
        if self.secrets.names:
            found = await page.evaluate(_TEXT_BOXES_JS, _MAX_TEXT_NODES)
            boxes = [box for box, text in found if self.secrets.redact(text) != text]
        if not boxes:
            shot: bytes = await page.screenshot(type="jpeg", quality=_JPEG_QUALITY, scale="css", timeout=timeout)
            return shot
        png = await page.screenshot(type="png", scale="css", timeout=timeout)
        return await asyncio.get_running_loop().run_in_executor(None, _black_out, png, boxes)

    def _page_after_failure(self, error: BaseException) -> PageState:
        """The page after a failed action (what the user wants to see in the log), when the browser is usable."""
        if not self._recording or self.state is not SessionState.OPEN or isinstance(
                error, (BrowserLaunchError, KeyboardInterrupt, SystemExit)):
            return PageState()
        try:
            state: PageState = self.driver.run(self._page_state, timeout=30)
            return state
        except Exception:  # noqa: BLE001 - the record is kept without the page
            return PageState()

    async def _await_popup(self, page: Any) -> None:
        """When the action opened a pop-up or a new tab (the page's watch script saw it), wait for it."""
        try:
            opened = await page.evaluate(_POPUP_TAKE_JS)
        except Exception:  # noqa: BLE001 - the page navigated or closed: no pop-up from it
            return
        if opened and self._popup_seen is not None:
            try:
                await asyncio.wait_for(self._popup_seen.wait(), self.config.navigation_timeout_s)
            except asyncio.TimeoutError:
                self.events.append("the page tried to open a pop-up, but none appeared (it may have been blocked)")

    def _flush_auto_code(self) -> None:
        """Code for events that arrived after their action returned (a slow pop-up) joins that action."""
        if self._auto_code and self.log:
            self.log[-1].code.extend(self._auto_code)
        self._auto_code = []

    def _record(self, action: str, target: str | None, status: str, started: float, wall: float,
                code: list[str], error: str | None, message: str = "", *, page: PageState | None = None) -> None:
        duration = time.perf_counter() - started
        target = self.secrets.redact(target) if target else target
        self.log.append(ActionLog(action, target, status, duration, code=code, message=message, error=error))
        if not self._recording:
            return
        page = page or PageState()
        shot = base64.b64encode(page.screenshot).decode("ascii") if page.screenshot else None
        if shot is not None and len(shot) > IMAGE_BYTES:
            page.note = f"screenshot of {len(shot):,} bytes of base64 not kept: over {IMAGE_BYTES:,}"
            shot = None
        result = message or None
        if page.note:
            result = f"{result}\n[{page.note}]" if result else f"[{page.note}]"
        try:
            self.tracer(BrowserActionRecord(
                agent=self.agent, action=action, target=target, status=status, duration_s=duration,
                code="\n".join(code) or None, result=result, error=error, started_at=wall, url=page.url,
                screenshot=shot, screenshot_mime="image/jpeg" if shot else None,
            ))
        except Exception:  # noqa: BLE001 - a broken tracer must not break the browser
            pass

    # -- observation -------------------------------------------------------------------------------------

    def observe(self, *, screenshot: bool = False, start_line: int = 1) -> Observation:
        """The current tab, the events since the last observation, and the capped snapshot."""
        if self.state is not SessionState.OPEN:
            self.start()
        try:
            return self.driver.run(self._observe, screenshot, start_line, timeout=self.config.navigation_timeout_s + 30)
        except BaseException as exc:
            error = _translate(exc)
            if error is exc:
                raise
            raise error from exc

    async def _observe(self, screenshot: bool, start_line: int) -> Observation:
        await self.settle()
        page, index = self.page, self.current
        try:
            title = self.secrets.redact(await page.title())
        except Exception:  # noqa: BLE001 - mid-navigation
            title = ""
        try:
            raw = await take_snapshot(page, timeout_s=self.config.action_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a page mid-load can refuse; say so instead of failing
            raw = f"(no snapshot: {str(exc).splitlines()[0]})"
        snap = self.secrets.redact(raw)
        capped: CappedText = cap_snapshot(snap, budget_tokens=self.config.snapshot_tokens, start_line=start_line)
        events, self.events = self.events, []
        url = self.secrets.redact(page.url)
        lines = [f"Tab {index} of {len(self.pages)}: {title!r} {url}"]
        if events:
            lines.append("Events since the last action:")
            lines += [f"- {e}" for e in events]
        lines.append("Page snapshot:")
        lines.append(capped.text)
        image = await page.screenshot(type="png") if screenshot else None
        return Observation(text="\n".join(lines), url=url, title=title, truncated=capped.truncated, events=events,
                           screenshot=image)

    def find_text(self, text: str, *, limit: int = 30) -> str:
        """Search the whole current snapshot (not only the capped part) for `text`."""
        if self.state is not SessionState.OPEN:
            self.start()
        raw = self.driver.run(lambda: take_snapshot(self.page, timeout_s=self.config.action_timeout_s),
                              timeout=self.config.action_timeout_s + 10)
        return find_lines(self.secrets.redact(raw), text, limit=limit, context=1)

    def export_script(self, **kwargs: Any) -> str:
        """The session as a plain Playwright script that replays it without a model (see `replay.py`)."""
        from lllm.tools.cua.replay import export_script

        self._flush_auto_code()
        return export_script(self, **kwargs)


def _describe_target(kwargs: dict[str, Any]) -> str | None:
    for key in ("ref", "selector", "url", "path", "index", "text", "keys"):
        if kwargs.get(key) is not None:
            return f"{key}={kwargs[key]}"
    if kwargs.get("x") is not None:
        return f"x={kwargs['x']},y={kwargs.get('y')}"
    return None


def _status_of(error: BaseException) -> str:
    if isinstance(error, (BlockedNavigation, ActionRefused)):
        return "blocked"
    if isinstance(error, ActionTimeout):
        return "timeout"
    return "error"


def _translate(exc: BaseException) -> BaseException:
    """Map a Playwright exception to the lllm error tree (the one boundary for playwright errors)."""
    if isinstance(exc, (LLLMError, KeyboardInterrupt, SystemExit)):
        return exc
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if not module.startswith("playwright"):
        if isinstance(exc, asyncio.TimeoutError):
            return ActionTimeout(f"the browser action timed out: {exc}")
        return exc
    text = str(exc)
    first = text.splitlines()[0] if text else name
    if name == "TimeoutError":
        return ActionTimeout(
            f"{first}. The page is still open and the session usable: look at the snapshot, wait, or try another "
            "element.",
        )
    if "ERR_BLOCKED_BY_CLIENT" in text or "ERR_TUNNEL_CONNECTION_FAILED" in text:
        return BlockedNavigation(f"{first}: the URL is outside the browser policy (allowed_domains)")
    if "strict mode violation" in text:
        return BrowserError(f"{first}. The selector matches several elements: use a ref from the snapshot or a "
                            "more precise selector.")
    return BrowserError(first)

