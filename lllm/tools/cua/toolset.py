"""The browser as tools for an agent: `BrowserToolset` (lllm `Function`s over a `BrowserSession`) and
`attach(agent, block, ctx)`, the `computer_use:` agent-config extension.

After every action the model reads what happened and the page as it is now: the tab, the events (dialogs,
pop-ups, blocked requests, downloads), and the accessibility snapshot with refs, capped to the config's
token budget. A screenshot comes as an image input (`ToolResult.images`) when the model asks for one (or on
every step with `screenshot_every_step`); only the last `screenshots_kept` stay in the dialog, older ones
are replaced by a note so a long session does not fill the context with images.

A failed action (a blocked URL, a stale ref, a timeout, a refused confirmation, a bad argument) is not a
crash: the tool answers `Error: ...` followed by the fresh observation, so the model can recover. Once the
step limit is reached every tool answers that the model must give its final answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from typing import Any, Literal

from lllm.errors import BrowserError, BrowserLaunchError, UsageError
from lllm.tools.cua.config import BrowserConfig
from lllm.tools.cua.session import BrowserSession

__all__ = ["BrowserToolset", "attach", "toolset_of"]

_TOOLSETS: weakref.WeakKeyDictionary[Any, BrowserToolset] = weakref.WeakKeyDictionary()
_TOOL_NAMES = {"type_text": "type"}
_DROPPED = "[an older screenshot was removed here: only the last {n} are kept]"


def toolset_of(agent: Any) -> BrowserToolset | None:
    """The browser toolset attached to `agent` (None when it has none)."""
    return _TOOLSETS.get(agent)


class BrowserToolset:
    """A `BrowserSession`'s actions as tools.

    Args:
        session: The browser session the tools drive.
        agent: The agent whose dialog holds the screenshots (for dropping old ones); set by `install`.
        max_steps: After this many actions every tool asks for the final answer (default: the config's).
    """

    def __init__(self, session: BrowserSession, *, agent: Any = None, max_steps: int | None = None) -> None:
        self.session = session
        self.agent = agent
        self.max_steps = max_steps if max_steps is not None else session.config.max_steps
        self.steps = 0
        """Actions run so far (each tool call that acts on the browser counts one)."""
        self._shots: list[str] = []  # digests of the screenshots sent, oldest first
        self._functions: list[Any] | None = None

    @property
    def config(self) -> BrowserConfig:
        """The session's config."""
        return self.session.config

    def install(self, agent: Any) -> BrowserToolset:
        """Add the tools to `agent.tools` and close the session in `agent.shutdown()`."""
        self.agent = agent
        agent.tools.extend(self.functions())
        agent.add_cleanup(self.session.close)
        _TOOLSETS[agent] = self
        return self

    # -- running a tool --------------------------------------------------------------------------------------

    def _act(self, action: str, *, screenshot: bool = False, start_line: int = 1, **kwargs: Any) -> Any:
        if self.steps >= self.max_steps:
            return (f"Step limit reached ({self.max_steps} browser actions). Do not call browser tools again: give "
                    "your final answer now from what you have seen.")
        self.steps += 1
        error: str | None = None
        outcome_text = ""
        try:
            if action != "snapshot":
                outcome_text = self.session.perform(action, **kwargs).message
        except BrowserLaunchError:
            raise  # no browser: the agent's call ends (never a tool result the model should work around)
        except (BrowserError, UsageError) as exc:
            error = f"Error: {type(exc).__name__}: {self.session.secrets.redact(str(exc))}"
        try:
            obs = self.session.observe(screenshot=screenshot or self.config.screenshot_every_step, start_line=start_line)
        except BrowserLaunchError:
            raise
        except (BrowserError, UsageError) as exc:
            return (error + "\n" if error else "") + f"(no observation: {exc})"
        head = error if error else outcome_text
        text = f"{head}\n{obs.text}" if head else obs.text
        if obs.screenshot is None:
            return text
        from lllm.core.prompt import ToolResult

        self._keep_last_screenshots(obs.screenshot)
        return ToolResult(content=text + "\n[a screenshot of the viewport follows as an image]", images=[obs.screenshot])

    def _keep_last_screenshots(self, new_png: bytes) -> None:
        """Remember the new screenshot and strip older ones beyond `screenshots_kept` from the agent's dialog."""
        keep = self.config.screenshots_kept
        self._shots.append(hashlib.sha256(new_png).hexdigest())
        dialog = getattr(self.agent, "current_dialog", None) if self.agent is not None else None
        if dialog is None:
            return
        # The new screenshot joins the dialog after this tool returns, so keep the newest `keep - 1` there.
        # Screenshots of an unchanged page are identical, so count by position, newest first.
        room = max(0, keep - 1)
        mine = set(self._shots)
        messages = dialog.messages
        for index in range(len(messages) - 1, -1, -1):
            message = messages[index]
            images = getattr(message, "images", None)
            if not images or not (message.metadata or {}).get("tool_images"):
                continue
            kept = []
            for image in reversed(images):
                try:
                    ours = hashlib.sha256(image.to_bytes()).hexdigest() in mine
                except Exception:  # noqa: BLE001 - not an image of ours
                    ours = False
                if ours:
                    if room == 0:
                        continue
                    room -= 1
                kept.append(image)
            kept.reverse()
            if len(kept) != len(images):
                note = _DROPPED.format(n=keep)
                content = message.content or ""
                if note not in content:
                    content = f"{content} {note}".strip()
                dialog.replace(index, dataclasses.replace(message, images=kept, content=content))

    # -- the tools ---------------------------------------------------------------------------------------------

    def functions(self) -> list[Any]:
        """The tools, as lllm `Function`s (built once)."""
        if self._functions is None:
            from lllm.core.prompt import Function

            self._functions = [
                Function.from_callable(fn, name="browser_" + _TOOL_NAMES.get(fn.__name__, fn.__name__))
                for fn in self._tool_callables()
            ]
        return self._functions

    def _tool_callables(self) -> list[Any]:  # noqa: C901 - one small closure per tool
        act = self._act

        def navigate(url: str) -> Any:
            """Open a URL in the current tab.

            Args:
                url: The address (https://...). Only allowed sites open; `{{secret:NAME}}` placeholders work.
            """
            return act("navigate", url=url)

        def back() -> Any:
            """Go back one page in the current tab."""
            return act("back")

        def forward() -> Any:
            """Go forward one page in the current tab."""
            return act("forward")

        def reload() -> Any:
            """Reload the current page."""
            return act("reload")

        def click(ref: str | None = None, selector: str | None = None, x: float | None = None, y: float | None = None,
                  button: Literal["left", "right", "middle"] = "left", modifiers: list[str] | None = None,
                  double: bool = False) -> Any:
            """Click an element: by `ref` from the snapshot (best), a `selector`, or `x`/`y` viewport coordinates.

            Args:
                ref: The element's ref from the latest snapshot, e.g. "e12".
                selector: A Playwright selector (CSS, "text=Pay now") when there is no ref.
                x: Horizontal viewport coordinate in CSS pixels (with y), the last resort.
                y: Vertical viewport coordinate in CSS pixels.
                button: Which mouse button.
                modifiers: Keys held during the click: Alt, Control, Meta, Shift.
                double: Double-click instead.
            """
            return act("click", ref=ref, selector=selector, x=x, y=y, button=button, modifiers=modifiers, double=double)

        def hover(ref: str | None = None, selector: str | None = None, x: float | None = None,
                  y: float | None = None) -> Any:
            """Move the mouse over an element (to open a menu or a tooltip).

            Args:
                ref: The element's ref from the latest snapshot.
                selector: A Playwright selector.
                x: Viewport x coordinate (with y).
                y: Viewport y coordinate.
            """
            return act("hover", ref=ref, selector=selector, x=x, y=y)

        def type_text(text: str, ref: str | None = None, selector: str | None = None, clear: bool = True,
                      submit: bool = False) -> Any:
            """Type text into a field. Write secrets as {{secret:NAME}}: they are filled in for you.

            Args:
                text: The text to type.
                ref: The field's ref from the latest snapshot.
                selector: A Playwright selector for the field.
                clear: Replace the field's content (true) or type after it (false).
                submit: Press Enter afterwards.
            """
            return act("type_text", text=text, ref=ref, selector=selector, clear=clear, submit=submit)

        def press(keys: str, ref: str | None = None, selector: str | None = None) -> Any:
            """Press keys: "Enter", a combination "Control+A", or several separated by spaces "Tab Tab Enter".

            Args:
                keys: The key or keys.
                ref: Focus this element first (optional).
                selector: Or focus the element this selector finds.
            """
            return act("press", keys=keys, ref=ref, selector=selector)

        def select_option(values: list[str], ref: str | None = None, selector: str | None = None) -> Any:
            """Choose one or more options of a dropdown (<select>) by their label or value.

            Args:
                values: The option labels or values.
                ref: The dropdown's ref from the latest snapshot.
                selector: A Playwright selector for the dropdown.
            """
            return act("select_option", values=values, ref=ref, selector=selector)

        def scroll(direction: Literal["up", "down", "left", "right"] = "down", amount: int = 600,
                   ref: str | None = None) -> Any:
            """Scroll the page, or scroll an element into view.

            Args:
                direction: Which way to scroll the page.
                amount: How far, in CSS pixels.
                ref: Scroll this element into view instead.
            """
            return act("scroll", direction=direction, amount=amount, ref=ref)

        def drag(ref: str | None = None, to_ref: str | None = None, x: float | None = None, y: float | None = None,
                 to_x: float | None = None, to_y: float | None = None) -> Any:
            """Drag an element onto another (by refs), or from one point to another (coordinates).

            Args:
                ref: The element to drag.
                to_ref: The element to drop it on.
                x: Start x (instead of ref).
                y: Start y.
                to_x: End x (instead of to_ref).
                to_y: End y.
            """
            return act("drag", ref=ref, to_ref=to_ref, x=x, y=y, to_x=to_x, to_y=to_y)

        def wait(text: str | None = None, gone: str | None = None, seconds: float | None = None) -> Any:
            """Wait until a text appears, until a text is gone, or for some seconds (at most 30).

            Args:
                text: Wait for this text to be visible.
                gone: Wait for this text to disappear.
                seconds: Or just wait this long.
            """
            return act("wait", text=text, gone=gone, seconds=seconds)

        def tabs() -> Any:
            """List the open tabs and which one is current."""
            return act("tabs")

        def open_tab(url: str | None = None) -> Any:
            """Open a new tab (optionally at a URL) and make it current.

            Args:
                url: The address to open in it.
            """
            return act("open_tab", url=url)

        def switch_tab(index: int) -> Any:
            """Make another tab current.

            Args:
                index: The tab's number from browser_tabs.
            """
            return act("switch_tab", index=index)

        def close_tab(index: int | None = None) -> Any:
            """Close a tab (default: the current one).

            Args:
                index: The tab's number from browser_tabs.
            """
            return act("close_tab", index=index)

        def upload(paths: list[str], ref: str | None = None, selector: str | None = None) -> Any:
            """Attach files from your workspace to a file input.

            Args:
                paths: File paths relative to the workspace.
                ref: The file input's ref from the latest snapshot.
                selector: A Playwright selector for the file input.
            """
            return act("upload", paths=paths, ref=ref, selector=selector)

        def screenshot() -> Any:
            """Look at the page: returns a screenshot of the viewport as an image, with the snapshot."""
            return act("screenshot", screenshot=True)

        def snapshot(start_line: int = 1) -> Any:
            """Show the page snapshot again, from a given line (to read a long page that was cut).

            Args:
                start_line: The first line to show (1-based).
            """
            return act("snapshot", start_line=start_line)

        def find_text(text: str) -> Any:
            """Search the whole page snapshot (also the part cut from view) for a text; returns matching lines.

            Args:
                text: The text to look for (case-insensitive).
            """
            try:
                return self.session.find_text(text)
            except BrowserLaunchError:
                raise
            except (BrowserError, UsageError) as exc:
                return f"Error: {type(exc).__name__}: {exc}"

        return [navigate, back, forward, reload, click, hover, type_text, press, select_option, scroll, drag, wait, tabs,
                open_tab, switch_tab, close_tab, upload, screenshot, snapshot, find_text]


def attach(agent: Any, block: dict[str, Any] | None, ctx: Any) -> BrowserToolset:
    """The `computer_use:` extension: give `agent` a browser for this tactic call.

    The session opens on the first browser action (an agent that never browses starts no browser) and is
    closed by `agent.shutdown()` when the call ends. Its records go to `ctx.tracer`; downloads and uploads
    use `ctx.workdir`.

    Args:
        agent: The agent being built.
        block: The `computer_use:` block (see `BrowserConfig`).
        ctx: The `AgentBuildContext` (`session_id`, `tracer`, `workdir`, `agent_name`).

    Returns:
        The installed toolset.

    Raises:
        ConfigError: The block is not a valid `BrowserConfig`.
    """
    config = BrowserConfig.from_block(block, source=f"agent {getattr(agent, 'name', '?')!r}: computer_use")
    tracer = getattr(ctx, "tracer", None) or getattr(agent, "tracer", None)
    workdir = ctx.workdir if ctx is not None and getattr(ctx, "session_id", None) else None
    session = BrowserSession(config, workdir=workdir, tracer=tracer, agent=getattr(agent, "name", None))
    return BrowserToolset(session).install(agent)
