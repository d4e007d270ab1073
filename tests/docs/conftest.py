"""Fixtures of the documentation tests: the built site served on the loopback interface and a
headless Chromium driven over the DevTools protocol.

Chromium speaks the protocol on two inherited pipes (``--remote-debugging-pipe``: it reads
commands on fd 3 and writes replies and events on fd 4, each message JSON ending in a NUL
byte), so the driver needs no WebSocket library and opens no port. Every host but the local
server resolves to nothing, so a page that loads anything from the internet (a CDN script, a
web font) fails the test with a console error instead of reaching the network.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "docs/_build/html"
SCREENSHOTS = ROOT / "docs/_build/screenshots"
VIEWPORT = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
TIMEOUT_S = 60.0  # generous: CI shares two cores with the build's leftovers


def chromium_binary() -> str | None:
    """Debian's ``chromium`` (or a ``CHROMIUM`` override), if installed."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


class Page:
    """One browser tab: its console errors and the protocol commands of its session."""

    def __init__(self, browser: Chromium, session: str, target: str):
        self.browser, self.session, self.target = browser, session, target
        self.errors: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.browser.events.clear()
        reply = self.call("Page.navigate", url=url)
        assert "errorText" not in reply, f"{url}: {reply['errorText']}"
        self.browser.wait_for("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, f"{expression}: {reply['exceptionDetails']}"
        return reply["result"].get("value")

    def wait_until(self, expression: str, timeout: float = TIMEOUT_S) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.browser.pump(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path) -> Path:
        """Save the visible viewport as a PNG after fonts and pending layout have settled."""
        self.wait_until("document.fonts.status === 'loaded'")
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    """A headless Chromium process and its DevTools pipe."""

    def __init__(self, binary: str, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()

        def as_fds_3_and_4() -> None:  # in the child, before exec
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            preexec_fn=as_fds_3_and_4,  # noqa: PLW1509  (single-threaded at this point)
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.pages: dict[str, Page] = {}

    def _read(self, timeout: float) -> bool:
        """Read what Chromium wrote within ``timeout``; dispatch each whole message."""
        ready, _, _ = select.select([self._evt_r], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self._evt_r, 1 << 20)
        if not chunk:
            raise RuntimeError(f"Chromium closed its DevTools pipe (exit {self.proc.poll()})")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            self._dispatch(json.loads(raw))
        return True

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            self._replies[msg["id"]] = msg
            return
        self.events.append(msg)
        page = self.pages.get(msg.get("sessionId", ""))
        if page is not None:
            error = console_error(msg)
            if error:
                page.errors.append(error)

    def pump(self, seconds: float) -> None:
        """Take in events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command and return its result; a protocol error raises."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while self._next_id not in self._replies:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {method}")
            self._read(0.5)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for(self, event: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for msg in self.events:
                if msg.get("method") == event and msg.get("sessionId") == session:
                    return msg
            self._read(0.5)
        raise TimeoutError(f"no {event}")

    def new_page(self) -> Page:
        """A fresh tab with console, exception and log reporting on."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"], target)
        self.pages[page.session] = page
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", **VIEWPORT)
        return page

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._evt_r)


def console_error(msg: dict[str, Any]) -> str:
    """The text of an error the page reported (console.error, an uncaught exception, a failed
    load), or ``""`` for any other event."""
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console: " + " ".join(
            str(a.get("value", a.get("description"))) for a in params["args"]
        )
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "exception: " + details.get("exception", {}).get(
            "description", details.get("text", "")
        )
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        entry = params["entry"]
        return f"log: {entry.get('text', '')} {entry.get('url', '')}".strip()
    return ""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base's name)
        pass


@pytest.fixture(scope="session")
def site_url() -> Iterator[str]:
    """The built site (``make docs``) served on 127.0.0.1."""
    if not (SITE / "index.html").is_file():
        pytest.skip("no built site: run `make docs` first")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests save their screenshots (kept after the run, to look at)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium: apt-get install chromium")
    chrome = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()
