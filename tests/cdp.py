"""Headless Chromium driven over ``--remote-debugging-pipe`` (DevTools protocol, stdlib only).

Threading contract: one reader thread per browser owns the pipe's read end and only appends
to ``_replies``/``_events`` under ``_cv``; every other method runs on the test's thread and
writes to the pipe's write end (one writer). Nothing else is shared.

Messages on the pipe are JSON objects separated by a NUL byte: Chromium reads commands on
fd 3 and writes replies and events on fd 4.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser")
WIDTH, HEIGHT = 1280, 900


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        flags = [
            "--headless=new",
            "--no-sandbox",  # we run as root
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",  # stay on 127.0.0.1
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ]

        def wire() -> None:
            # In the child: our pipe ends become fds 3 and 4. Lifted above 10 first, so one
            # cannot overwrite the other; close_fds runs after this and keeps pass_fds only.
            reader = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            writer = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(reader, 3)
            os.dup2(writer, 4)

        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [binary, *flags],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=wire,
                pass_fds=(3, 4),
                start_new_session=True,
            )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._write_fd, self._read_fd = to_chrome_w, from_chrome_r
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._closed = False
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._closed = True
                    self._cv.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cv:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._events.append(message)
                self._cv.notify_all()

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        with self._cv:
            while ident not in self._replies:
                if self._closed:
                    raise RuntimeError(f"chromium went away during {method}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(method)
                self._cv.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def events(self, session: str) -> list[dict[str, Any]]:
        with self._cv:
            return [e for e in self._events if e.get("sessionId") == session]

    def page(self, accept_language: str = "en") -> Page:
        """A tab in a fresh incognito context (own cookies and sessionStorage)."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        return Page(self, session, context, accept_language)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        os.close(self._write_fd)
        # Chromium is gone, so the reader sees EOF; only then may its fd number be reused.
        self._reader.join(5)
        if not self._reader.is_alive():
            os.close(self._read_fd)


class Page:
    def __init__(self, browser: Browser, session: str, context: str, language: str) -> None:
        self.browser, self.session, self.context = browser, session, context
        for domain in ("Page.enable", "Runtime.enable", "Network.enable"):
            self.send(domain)
        # Headless reports an 800x600 screen; the theme's mobile stylesheet would apply.
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": WIDTH,
                "height": HEIGHT,
                "deviceScaleFactor": 1,
                "mobile": False,
                "screenWidth": WIDTH,
                "screenHeight": HEIGHT,
            },
        )
        # What a browser set to this language sends: Accept-Language and navigator.languages.
        agent = self.js("navigator.userAgent")
        self.send(
            "Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": language}
        )

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def js(self, expression: str) -> Any:
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            return None
        return reply.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.js(expression):
                    return True
            except RuntimeError:
                pass  # the page is navigating: its context went away
            time.sleep(0.1)
        return False

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(
            self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})[
                "data"
            ]
        )
        path.write_bytes(data)
        return data

    def full_height(self) -> None:
        """Grow the viewport to the whole page, so one screenshot shows all of it."""
        height = int(self.js("document.documentElement.scrollHeight") or HEIGHT)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": WIDTH,
                "height": max(HEIGHT, height),
                "deviceScaleFactor": 1,
                "mobile": False,
                "screenWidth": WIDTH,
                "screenHeight": max(HEIGHT, height),
            },
        )

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors of this tab so far."""
        out = []
        for event in self.browser.events(self.session):
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(details.get("exception", {}).get("description") or details.get("text"))
            elif (
                event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error"
            ):
                out.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
        return [str(e) for e in out]

    def posts(self) -> list[tuple[float, str]]:
        """(monotonic seconds, body) of every POST this tab sent, in order."""
        out = []
        for event in self.browser.events(self.session):
            if event.get("method") == "Network.requestWillBeSent":
                request = event["params"]["request"]
                if request.get("method") == "POST":
                    out.append((float(event["params"]["timestamp"]), request.get("postData", "")))
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError):
            self.browser.send("Target.disposeBrowserContext", {"browserContextId": self.context})
