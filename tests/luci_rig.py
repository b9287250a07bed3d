"""LuCI's client side on real OpenWrt userland, for a browser test of luci-app-energyhub.

::

    Chromium (host) --HTTP 127.0.0.1:<port>--> uhttpd -u /ubus (uhttpd_ubus.so)
        --> ubusd <-- rpcd (sessions, ACLs from /usr/share/rpcd/acl.d, logins in /etc/config/rpcd)
                  <-- luci_features.py (the ``luci`` object luci.js asks on every page)
                  <-- energyhubd of a lab site (object ``energyhub``, control.ubus_socket)

ubusd, rpcd and uhttpd come from the project's OpenWrt build (``scripts/openwrt/build.sh``,
the ``openwrt_build`` fixture; its ``stage/usr``) and run in a private mount namespace:
overlays on /etc and /usr (their upper layers in the scratch directory), fresh tmpfs on /run
and /tmp. The scratch directory
is visible inside as /tmp/rig and the build as /tmp/owrt; the ubus socket is a path in the
scratch directory, so the lab's daemon (in its network namespace, outside this mount
namespace) reaches the same ubusd. The docroot is what OpenWrt installs to /www: LuCI's
luci-base and bootstrap theme htdocs (from the shared sources), the app's htdocs, a static
stand-in for the dispatcher's page (tests/luci/index.html) and the compiled catalogues.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "openwrt-package" / "luci-app-energyhub"
PASSWORD = "energyhub-test"
INSIDE_SCRATCH = "/tmp/rig"
INSIDE_BUILD = "/tmp/owrt"


def openwrt_src() -> Path:
    return Path(os.environ.get("ENERGYHUB_OPENWRT_SRC", REPO.parent / "shared" / "openwrt-src"))


# -- translations ----------------------------------------------------------------------------


def sfh(text: str) -> str | None:
    """LuCI's translation key: Paul Hsieh's SuperFastHash of the UTF-8 bytes, 8 hex digits.

    The same function as ``sfh`` in luci-base's cbi.js (and the lmo files of po2lmo), so a
    catalogue made here is looked up by ``_()`` in the browser; the test checks both agree.
    """
    data = text.encode("utf-8")
    if not data:
        return None
    mask = 0xFFFFFFFF

    def u16(at: int) -> int:
        return data[at] | (data[at + 1] << 8)

    def s8(at: int) -> int:
        return data[at] - 256 if data[at] > 127 else data[at]

    h = len(data)
    at = 0
    for _ in range(len(data) // 4):
        h = (h + u16(at)) & mask
        tmp = ((u16(at + 2) << 11) ^ h) & mask
        h = ((h << 16) ^ tmp) & mask
        h = (h + (h >> 11)) & mask
        at += 4
    rest = len(data) & 3
    if rest == 3:
        h = (h + u16(at)) & mask
        h = (h ^ (h << 16)) & mask
        h = (h ^ ((s8(at + 2) << 18) & mask)) & mask
        h = (h + (h >> 11)) & mask
    elif rest == 2:
        h = (h + u16(at)) & mask
        h = (h ^ (h << 11)) & mask
        h = (h + (h >> 17)) & mask
    elif rest == 1:
        h = (h + (s8(at) & mask)) & mask
        h = (h ^ (h << 10)) & mask
        h = (h + (h >> 1)) & mask
    for shift_left, shift_right in ((3, 5), (4, 17), (25, 6)):
        h = (h ^ (h << shift_left)) & mask
        h = (h + (h >> shift_right)) & mask
    return f"{h:08x}"


_PO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_PO_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unquote(line: str) -> str:
    body = "".join(_PO_STRING.findall(line))
    return re.sub(r"\\(.)", lambda m: _PO_ESCAPES.get(m.group(1), m.group(1)), body)


def parse_po(text: str) -> dict[str, str]:
    """msgid (with ``context\\x01`` in front when there is one) -> msgstr; empty ones left out."""
    entries: list[dict[str, str]] = [{}]
    field = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            if entries[-1]:
                entries.append({})
            field = ""
            continue
        keyword = line.split(" ", 1)[0]
        if keyword in ("msgctxt", "msgid", "msgstr"):
            if keyword in entries[-1] or (keyword != "msgstr" and "msgstr" in entries[-1]):
                entries.append({})
            field = keyword
            entries[-1][field] = _unquote(line[len(keyword) :])
        elif line.startswith('"') and field:
            entries[-1][field] += _unquote(line)
    out = {}
    for entry in entries:
        msgid, msgstr = entry.get("msgid"), entry.get("msgstr")
        if not msgid or not msgstr:
            continue
        key = " ".join(msgid.split())  # cbi.js trims and collapses white space
        if entry.get("msgctxt"):
            key = " ".join(entry["msgctxt"].split()) + "\x01" + key
        out[key] = msgstr
    return out


def catalogue_script(po: Path) -> str:
    """What the dispatcher's admin/translations/<lang> sends: ``window.TR = {hash: text}``."""
    table = {sfh(k): v for k, v in parse_po(po.read_text(encoding="utf-8")).items()}
    return "window.TR=" + json.dumps(table, ensure_ascii=False, sort_keys=True) + ";\n"


# -- the stack -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    """ubusd, rpcd, the ``luci`` stand-in and uhttpd in a private mount namespace."""

    def __init__(self, build: Path, scratch: Path, logins: dict[str, dict[str, list[str]]]):
        self.build = build
        self.scratch = scratch
        self.logins = logins
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.socket = scratch / "ubus.sock"
        self.holder: subprocess.Popen[str] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    # What the lab's daemon needs to load python3-ubus from the build.
    @property
    def python_env(self) -> dict[str, str]:
        return {
            "PYTHONPATH": str(self.build / "pyubus"),
            "LD_LIBRARY_PATH": str(self.build / "stage" / "usr" / "lib"),
        }

    def languages(self) -> list[str]:
        return sorted(p.name for p in (APP / "po").iterdir() if p.name != "templates")

    def prepare(self) -> None:
        s = self.scratch
        for d in ("etc-up/config", "etc-wk", "usr-up/share/rpcd/acl.d", "usr-wk", "www/i18n"):
            (s / d).mkdir(parents=True, exist_ok=True)
        luci = openwrt_src() / "luci"
        www = s / "www"
        for tree in (
            luci / "modules/luci-base/htdocs",
            luci / "themes/luci-theme-bootstrap/htdocs",
            APP / "htdocs",
        ):
            shutil.copytree(tree, www, dirs_exist_ok=True)
        page = (Path(__file__).parent / "luci" / "index.html").read_text()
        langs = [lang for lang in self.languages() if lang != "en"]
        (www / "index.html").write_text(page.replace("@LANGUAGES@", json.dumps(langs)))
        for lang in langs:
            (www / "i18n" / f"{lang}.js").write_text(
                catalogue_script(APP / "po" / lang / "energyhub.po"), encoding="utf-8"
            )
        acl = s / "usr-up/share/rpcd/acl.d"
        shutil.copy(luci / "modules/luci-base/root/usr/share/rpcd/acl.d/luci-base.json", acl)
        shutil.copy(APP / "root/usr/share/rpcd/acl.d/luci-app-energyhub.json", acl)
        # rpcd's own package ships this group: what a login page may do before logging in.
        (acl / "unauthenticated.json").write_text(
            json.dumps(
                {
                    "unauthenticated": {
                        "description": "Access controls for unauthenticated requests",
                        "read": {"ubus": {"session": ["access", "login"]}},
                    }
                }
            )
        )
        crypt = subprocess.run(
            ["openssl", "passwd", "-1", PASSWORD], capture_output=True, text=True, check=True
        ).stdout.strip()
        lines = ["config rpcd", "\toption timeout 300", ""]
        for user, grants in self.logins.items():
            lines += ["config login", f"\toption username '{user}'", f"\toption password '{crypt}'"]
            for kind in ("read", "write"):
                lines += [f"\tlist {kind} '{group}'" for group in grants.get(kind, [])]
            lines.append("")
        (s / "etc-up/config/rpcd").write_text("\n".join(lines))

    def start(self) -> None:
        self.prepare()
        s, b = self.scratch, self.build
        script = f"""set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={s}/etc-up,workdir={s}/etc-wk /etc
mount -t overlay overlay -o lowerdir=/usr,upperdir={s}/usr-up,workdir={s}/usr-wk /usr
mount -t tmpfs tmpfs /mnt
mkdir /mnt/rig /mnt/owrt
mount --bind {s} /mnt/rig
mount --bind -o ro {b} /mnt/owrt
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p {INSIDE_SCRATCH} {INSIDE_BUILD} /run/lock
mount --move /mnt/rig {INSIDE_SCRATCH}
mount --move /mnt/owrt {INSIDE_BUILD}
umount /mnt
echo ready
exec sleep infinity
"""
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            raise RuntimeError("mount namespace set-up failed")
        sock = f"{INSIDE_SCRATCH}/ubus.sock"
        usr = f"{INSIDE_BUILD}/stage/usr"
        self.spawn("ubusd", [f"{usr}/sbin/ubusd", "-s", sock])
        self.wait(lambda: self.socket.exists(), "ubusd made no socket")
        self.spawn("rpcd", [f"{usr}/sbin/rpcd", "-s", sock])
        self.wait(lambda: self.has_object("session"), "rpcd registered no session object")
        # A plain ubus client like the lab's daemon: it runs outside the mount namespace (its
        # interpreter and this file may live below the /tmp that is hidden in there).
        stand_in = Path(__file__).parent / "luci_features.py"
        with open(s / "luci-features.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(stand_in), str(self.socket)],
                    env={**os.environ, **self.python_env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        self.wait(lambda: self.has_object("luci"), "no luci object")
        self.spawn(
            "uhttpd",
            [
                f"{usr}/bin/uhttpd",
                "-f",
                "-p",
                f"127.0.0.1:{self.port}",
                "-h",
                f"{INSIDE_SCRATCH}/www",
                "-u",
                "/ubus",
                "-U",
                sock,
                "-t",
                "30",
                "-T",
                "30",
            ],
        )
        self.wait(self._serves, "uhttpd does not answer")

    def nsenter(self, argv: list[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        full_env = {
            **os.environ,
            "LD_LIBRARY_PATH": f"{INSIDE_BUILD}/stage/usr/lib",
            **(env or {}),
        }
        with open(self.scratch / f"{name}.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    self.nsenter(argv), env=full_env, stdout=log, stderr=subprocess.STDOUT
                )
            )

    def has_object(self, name: str) -> bool:
        proc = subprocess.run(
            self.nsenter(
                [f"{INSIDE_BUILD}/stage/usr/bin/ubus", "-s", f"{INSIDE_SCRATCH}/ubus.sock", "list"]
            ),
            capture_output=True,
            text=True,
            env={**os.environ, "LD_LIBRARY_PATH": f"{INSIDE_BUILD}/stage/usr/lib"},
            timeout=10,
        )
        return name in proc.stdout.split()

    def _serves(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/index.html", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    @staticmethod
    def wait(predicate: Any, message: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise RuntimeError(message)

    def jsonrpc(self, method: str, params: list[Any]) -> dict[str, Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        request = urllib.request.Request(
            self.base + "/ubus", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return dict(json.loads(reply.read()))

    def login(self, user: str) -> str:
        """A real rpcd session, as LuCI's login does it."""
        answer = self.jsonrpc(
            "call", ["0" * 32, "session", "login", {"username": user, "password": PASSWORD}]
        )
        result = answer.get("result")
        if not (isinstance(result, list) and result[0] == 0):
            raise RuntimeError(f"login {user}: {answer}")
        return str(result[1]["ubus_rpc_session"])

    def url(self, sid: str) -> str:
        return f"{self.base}/index.html?view=energyhub/status&sid={sid}"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(5)
