"""The Playwright driver: one event loop on its own thread, running Playwright and one Chromium.

Playwright's sync API is bound to the thread that started it and cannot run inside a running asyncio loop,
and a bcall runs agents on many worker threads. So Playwright runs here, on a dedicated thread with its own
event loop (Playwright's async API), and every browser call is marshalled to it with `BrowserDriver.run`:
sessions work from any thread, and sessions of different agents proceed concurrently in one browser (one
browser context each). Chromium is launched on first use and relaunched if it dies.

`shared_driver()` gives the process-wide driver for a Chromium path and headless flag (what config-built
sessions use); `close_shared_drivers()` closes them (also at exit).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from typing import Any, Awaitable, Callable, TypeVar

from lllm.errors import ActionTimeout, BrowserLaunchError, UsageError

__all__ = ["BrowserDriver", "close_shared_drivers", "shared_driver"]

T = TypeVar("T")

_INSTALL_HINT = 'Playwright is not installed: pip install "lllm[browser]" (Chromium comes from the OS: apt-get install chromium)'


class BrowserDriver:
    """Playwright plus one Chromium, on a dedicated thread; thread-safe.

    Args:
        executable_path: The Chromium binary (never downloaded: `playwright install` is not used).
        headless: Run without a window.
        args: Chromium command-line flags.
    """

    def __init__(self, *, executable_path: str, headless: bool = True, args: tuple[str, ...] | list[str] = ()) -> None:
        self.executable_path = executable_path
        self.headless = headless
        self.args = list(args)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._playwright: Any = None
        self._browser: Any = None
        self._browser_lock: asyncio.Lock | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.launches = 0
        """How many times Chromium was launched (more than one means it died and was relaunched)."""

    # -- the thread ---------------------------------------------------------------------------------------

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise UsageError("this BrowserDriver was closed; create a new one (or use shared_driver())")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name="lllm-playwright", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The driver's event loop (started on first use)."""
        return self._ensure_thread()

    def in_driver_thread(self) -> bool:
        """True when called from the driver's own thread (where blocking on it would deadlock)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the driver's loop and return its future."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_thread())  # type: ignore[arg-type]

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run `await fn(*args, **kwargs)` on the driver's loop and wait for its result.

        Args:
            fn: An async function (it runs on the driver thread, where Playwright objects live).
            timeout: Seconds to wait before cancelling it and raising `ActionTimeout` (a safety net above
                Playwright's own timeouts).

        Raises:
            ActionTimeout: It ran past `timeout`.
            UsageError: Called from the driver thread itself (a hook that drives the browser).
        """
        if self.in_driver_thread():
            raise UsageError(
                "a browser call was made from the Playwright driver thread (for example from a confirmation "
                "hook or tracer); hooks must not drive the browser themselves"
            )
        future = self.submit(fn(*args, **kwargs))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ActionTimeout(
                f"browser call {getattr(fn, '__name__', fn)!r} did not finish within {timeout}s and was cancelled",
                timeout=timeout,
            ) from None

    # -- the browser --------------------------------------------------------------------------------------

    async def browser(self) -> Any:
        """The running Chromium (launched on first use, relaunched after a crash). Call on the driver loop.

        Raises:
            BrowserLaunchError: Playwright is missing or Chromium does not start (the message says why); an
                infrastructure error, so it ends the agent's call rather than reaching the model.
        """
        if self._browser_lock is None:
            self._browser_lock = asyncio.Lock()
        async with self._browser_lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._playwright is None:
                try:
                    from playwright.async_api import async_playwright
                except ImportError as exc:
                    raise BrowserLaunchError(_INSTALL_HINT) from exc
                self._playwright = await async_playwright().start()
            if not os.path.exists(self.executable_path):
                raise BrowserLaunchError(
                    f"no Chromium at {self.executable_path!r}: apt-get install -y chromium, or set "
                    "computer_use.executable_path / LLLM_CHROMIUM (never `playwright install`)",
                    executable_path=self.executable_path,
                )
            try:
                self._browser = await self._playwright.chromium.launch(
                    executable_path=self.executable_path, headless=self.headless, args=self.args
                )
            except Exception as exc:  # playwright.Error: translate at this boundary
                raise BrowserLaunchError(
                    f"Chromium at {self.executable_path!r} did not start: {str(exc).splitlines()[0]}",
                    executable_path=self.executable_path,
                ) from exc
            self.launches += 1
            return self._browser

    def start(self) -> None:
        """Launch Chromium now (otherwise the first session launches it)."""
        self.run(self.browser, timeout=120)

    async def _shutdown(self) -> None:
        if self._browser is not None:
            try:
                await self._browser.close()
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._browser = None
        if self._playwright is not None:
            try:
                await self._playwright.stop()
            except Exception:  # noqa: BLE001
                pass
            self._playwright = None

    def close(self) -> None:
        """Close Chromium and stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None:
            return
        if thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> BrowserDriver:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


_shared: dict[tuple[str, bool, tuple[str, ...]], BrowserDriver] = {}
_shared_lock = threading.Lock()


def shared_driver(*, executable_path: str, headless: bool = True, args: tuple[str, ...] = ()) -> BrowserDriver:
    """The process-wide driver for this Chromium, headless flag and flags (created on first use)."""
    key = (executable_path, headless, tuple(args))
    with _shared_lock:
        driver = _shared.get(key)
        if driver is None or driver._closed:
            driver = _shared[key] = BrowserDriver(executable_path=executable_path, headless=headless, args=args)
        return driver


def close_shared_drivers() -> None:
    """Close every shared driver (their Chromium processes exit). Sessions opened later start new ones."""
    with _shared_lock:
        drivers = list(_shared.values())
        _shared.clear()
    for driver in drivers:
        driver.close()


atexit.register(close_shared_drivers)
