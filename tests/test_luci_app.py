"""luci-app-energyhub in headless Chromium, against real uhttpd, rpcd and a running lab site.

The lab site (display and three units by real udhcpc, one stranger) runs energyhubd, which
also serves its ubus object on the rig's ubusd (``control.ubus_socket``); the customer's
firewall filters the support gateway's port and intercepts HTTPS to the update server. Two
rpcd logins look at the page: ``installer`` (may run diagnostics and open the tunnel) and
``support`` (reads only). Set ENERGYHUB_LUCI_SCREENSHOTS=<dir> to keep the screenshots
(docs/img holds the ones the installer guide shows).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import netns
from energyhub_lab.site import Client, Site
from energyhubd.control.client import call
from tests import cdp, luci_rig
from tests.conftest import unique

VIEW = luci_rig.APP / "htdocs/luci-static/resources/view/energyhub/status.js"
STRANGER = Client("stranger", "02:aa:bb:cc:dd:01", "laptop")
LOGINS = {
    # What a LuCI login needs on every page, plus the app's groups (see the package's ACL).
    "installer": {
        "read": ["unauthenticated", "luci-base", "luci-app-energyhub", "luci-app-energyhub-admin"],
        "write": ["luci-app-energyhub-admin"],
    },
    "support": {"read": ["unauthenticated", "luci-base", "luci-app-energyhub"]},
    "guest": {"read": ["unauthenticated", "luci-base"]},  # a LuCI login without the app
}


def view_strings() -> list[str]:
    """Every ``_('...')`` of the view, in order, unescaped."""
    out: list[str] = []
    for match in re.finditer(r"_\('((?:[^'\\]|\\.)*)'\)", VIEW.read_text()):
        text = re.sub(r"\\(.)", r"\1", match.group(1))
        if text not in out:
            out.append(text)
    return out


# -- package files (no root needed) ----------------------------------------------------------


def test_every_view_string_is_in_the_template_and_translated_to_swedish() -> None:
    strings = view_strings()
    template = luci_rig.parse_po(
        (luci_rig.APP / "po/templates/energyhub.pot").read_text().replace('msgstr ""', 'msgstr "-"')
    )
    swedish = luci_rig.parse_po((luci_rig.APP / "po/sv/energyhub.po").read_text())
    assert len(strings) > 100
    assert [s for s in strings if s not in template] == []
    assert [s for s in strings if s not in swedish] == []
    assert [s for s in swedish if s not in strings] == []  # nothing stale
    for source, text in swedish.items():  # printf placeholders survive translation
        assert re.findall(r"%[sd]", source) == re.findall(r"%[sd]", text), source


def test_every_diagnostic_code_has_words_in_the_view() -> None:
    from energyhubd.outbound import reasons

    body = VIEW.read_text()
    for code in reasons.CODES - {reasons.OTHER}:
        assert f"case '{code}':" in body, code


def test_acl_and_menu() -> None:
    root = luci_rig.APP / "root/usr/share"
    acl = json.loads((root / "rpcd/acl.d/luci-app-energyhub.json").read_text())
    assert acl["luci-app-energyhub"]["read"]["ubus"]["energyhub"] == ["status"]
    assert "write" not in acl["luci-app-energyhub"]
    admin = acl["luci-app-energyhub-admin"]
    assert sorted(admin["write"]["ubus"]["energyhub"]) == ["diagnose", "tunnel"]
    menu = json.loads((root / "luci/menu.d/luci-app-energyhub.json").read_text())
    entry = menu["admin/status/energyhub"]
    assert entry["action"] == {"type": "view", "path": "energyhub/status"}
    assert entry["depends"]["acl"] == ["luci-app-energyhub"]


def test_makefile_follows_luci_mk() -> None:
    """luci.mk installs htdocs/, root/ and po/ by convention: the Makefile only declares."""
    text = (luci_rig.APP / "Makefile").read_text()
    assert "include $(TOPDIR)/feeds/luci/luci.mk" in text
    assert re.search(r"^LUCI_DEPENDS:=.*\+energyhubd", text, re.M)
    assert "# call BuildPackage - OpenWrt buildroot signature" in text


def test_po_parser_handles_continuations_context_and_escapes() -> None:
    text = (
        'msgid ""\nmsgstr "Language: sv\\n"\n\n'
        'msgid "a \\"b\\""\nmsgstr ""\n"x "\n"y"\n\n'
        'msgctxt "menu"\nmsgid "Open"\nmsgstr "Öppna"\n\n'
        'msgid "untranslated"\nmsgstr ""\n'
    )
    assert luci_rig.parse_po(text) == {'a "b"': "x y", "menu\x01Open": "Öppna"}


# -- in the browser --------------------------------------------------------------------------


@dataclass
class Stack:
    rig: luci_rig.Rig
    site: Site
    browser: cdp.Browser
    shots: Path
    keep: Path | None

    def open(self, user: str, language: str = "en") -> cdp.Page:
        page = self.browser.page(language)
        page.goto(self.rig.url(self.rig.login(user)))
        assert page.wait("!!document.querySelector('#energyhub-body [id^=energyhub-]')"), (
            "the view did not render: " + str(page.js("document.body.innerText"))
        )
        return page

    def screenshot(self, page: cdp.Page, name: str) -> None:
        page.full_height()
        page.js("new Promise(function(r){setTimeout(r, 600)})")  # notifications fade in
        page.screenshot(self.shots / name)
        if self.keep is not None:
            shutil.copy(self.shots / name, self.keep / name)


class UbusSite(Site):
    """The lab site whose daemon also serves ``energyhub`` on the rig's ubusd."""

    ubus_socket = ""

    def router_config(self) -> dict[str, Any]:
        document = super().router_config()
        document["control"]["ubus_socket"] = self.ubus_socket
        return document


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, openwrt_build: Path) -> Iterator[Stack]:
    # A failing OpenWrt build fails these tests (the fixture raises); only a missing
    # chromium skips them.
    chromium = cdp.find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    build = openwrt_build
    scratch = tmp_path_factory.mktemp("luci")
    rig = luci_rig.Rig(build, scratch, LOGINS)
    site = UbusSite(prefix=unique("ehL"), daemon_env=rig.python_env)
    site.ubus_socket = str(rig.socket)
    browser = None
    try:
        rig.start()
        site.up()
        site.add_client(STRANGER)
        assert site.internet is not None
        site.internet.block("gateway")
        site.internet.intercept("update_https")
        call(site.socket, "diagnose", {"timeout": 60}, timeout=75)
        rig.wait(lambda: rig.has_object("energyhub"), "energyhubd did not register on ubus")
        browser = cdp.Browser(chromium, scratch / "profile", scratch / "chromium.log")
        keep = os.environ.get("ENERGYHUB_LUCI_SCREENSHOTS")
        yield Stack(rig, site, browser, scratch, Path(keep) if keep else None)
    finally:
        if browser is not None:
            browser.close()
        site.down()
        rig.stop()


def texts(page: cdp.Page, selector: str) -> list[str]:
    """What a reader sees in each match (innerText: as rendered, so labels come upper-cased
    by the theme's CSS); compare with ``shows``."""
    found = page.js(
        f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
        ".map(function(e){return e.innerText.replace(/\\s+/g,' ').trim()})"
    )
    return list(found or [])


def shows(seen: str, part: str) -> bool:
    return part.casefold() in seen.casefold()


@pytest.mark.netns
def test_catalogue_keys_are_the_hashes_cbi_js_computes(stack: Stack) -> None:
    page = stack.open("support")
    try:
        strings = view_strings()
        in_browser = page.js(f"{json.dumps(strings)}.map(function(s){{return sfh(s)}})")
        assert in_browser == [luci_rig.sfh(s) for s in strings]
    finally:
        page.close()


@pytest.mark.netns
def test_installer_sees_the_site_at_a_glance(stack: Stack) -> None:
    page = stack.open("installer")
    try:
        rows = page.js(
            "Array.from(document.querySelectorAll('#energyhub-devices tr[data-role]'))"
            ".map(function(r){return {role: r.dataset.role, present: r.dataset.present,"
            " text: r.innerText.replace(/\\s+/g,' '),"
            " bg: getComputedStyle(r).backgroundColor}})"
        )
        display = [r for r in rows if r["role"] == "display"]
        units = [r for r in rows if r["role"] == "unit"]
        unknown = [r for r in rows if r["role"] == "unknown"]
        assert len(display) == 1 and shows(display[0]["text"], "192.168.254.200")
        assert display[0]["present"] == "true" and shows(display[0]["text"], "online")
        assert len(units) == 3 and all(u["present"] == "true" for u in units), units
        assert shows(texts(page, "#energyhub-units")[0], "Units online: 3 of 3 expected complete")
        # The stranger: named as unknown, when it came, and the row tinted red.
        assert len(unknown) == 1, rows
        assert shows(unknown[0]["text"], STRANGER.mac) and shows(unknown[0]["text"], "first seen")
        assert unknown[0]["bg"] not in ("rgba(0, 0, 0, 0)", display[0]["bg"])
        verdict = texts(page, "#energyhub-verdict")[0]
        assert shows(verdict, "1 unknown device(s)") and shows(
            verdict, "Remote support gateway fails"
        )
        gateway = texts(page, "#energyhub-flows tr[data-flow=gateway]")[0]
        assert shows(gateway, "failed")
        assert shows(gateway, "No answer within 2 s: a firewall drops the traffic (filtered).")
        https = texts(page, "#energyhub-flows tr[data-flow=update_https]")[0]
        assert shows(https, "is intercepted by a device on the customer network")
        assert shows(https, "Contoso Inspection CA")
        forwards = texts(page, "#energyhub-forwards tr[data-forward=modbus]")[0]
        assert shows(forwards, "198.51.100.20/32") and shows(
            forwards, "192.168.254.201:502 (unit1)"
        )
        router = texts(page, "#energyhub-router tr[data-key=wan]")[0]
        assert shows(router, "198.51.100.") and shows(router, "DHCP")
        assert page.js("!!document.getElementById('energyhub-tunnel-open')")
        assert page.js("!!document.getElementById('energyhub-tunnel-close')")
        assert page.js("!!document.getElementById('energyhub-diagnose')")
        assert page.errors() == []
        stack.screenshot(page, "luci-status-en.png")
    finally:
        page.close()


@pytest.mark.netns
def test_swedish_browser_reads_the_reasons_in_swedish(stack: Stack) -> None:
    page = stack.open("installer", "sv-SE,sv;q=0.9")
    try:
        assert page.js("document.documentElement.lang") == "sv"
        assert texts(page, "#energyhub-devices h3") == ["Enheter"]
        gateway = texts(page, "#energyhub-flows tr[data-flow=gateway]")[0]
        assert shows(gateway, "Fjärrsupportens gateway") and shows(gateway, "underkänd")
        assert shows(gateway, "Inget svar inom 2 s: en brandvägg släpper inte igenom trafiken")
        https = texts(page, "#energyhub-flows tr[data-flow=update_https]")[0]
        assert shows(https, "avlyssnas av en enhet i kundens nät (utfärdare: Contoso Inspection CA")
        assert shows(https, "Automatiska uppdateringar kommer att misslyckas.")
        assert shows(texts(page, "#energyhub-devices tr[data-role=unknown]")[0], "Okänd enhet")
        assert page.errors() == []
        stack.screenshot(page, "luci-status-sv.png")
    finally:
        page.close()


@pytest.mark.netns
def test_support_login_sees_the_state_but_no_buttons(stack: Stack) -> None:
    page = stack.open("support")
    try:
        assert shows(texts(page, "#energyhub-tunnel tr[data-key=tunnel-state]")[0], "State closed")
        assert not page.js("!!document.getElementById('energyhub-tunnel-open')")
        assert not page.js("!!document.getElementById('energyhub-tunnel-close')")
        assert not page.js("!!document.getElementById('energyhub-diagnose')")
        assert page.errors() == []
    finally:
        page.close()
    # The buttons are only the page's courtesy: rpcd refuses the call itself.
    sid = stack.rig.login("support")
    answer = stack.rig.jsonrpc("call", [sid, "energyhub", "tunnel", {"action": "open"}])
    assert answer.get("error", {}).get("code") == -32002, answer


@pytest.mark.netns
def test_login_without_the_app_group_is_told_so(stack: Stack) -> None:
    page = stack.browser.page("en")
    try:
        page.goto(stack.rig.url(stack.rig.login("guest")))
        assert page.wait("!!document.getElementById('energyhub-unavailable')")
        assert page.js("document.getElementById('energyhub-unavailable').dataset.kind") == "denied"
        assert shows(texts(page, "#energyhub-unavailable")[0], "may not read")
    finally:
        page.close()


@pytest.mark.netns
def test_page_polls_the_daemon_at_most_every_five_seconds(stack: Stack) -> None:
    page = stack.open("support")
    try:
        time.sleep(11)
        calls = [
            at
            for at, body in page.posts()
            if '"energyhub"' in body and '"status"' in body  # JSON-RPC batches included
        ]
        assert 2 <= len(calls) <= 4, calls  # the first load, then one every 5 s
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert all(gap >= 4.5 for gap in gaps), gaps
    finally:
        page.close()


@pytest.mark.netns
def test_installer_runs_the_diagnostics_again_from_the_page(stack: Stack) -> None:
    before = call(stack.site.socket, "status")["outbound"]["diagnostics"]["runs"]
    page = stack.open("installer")
    try:
        page.js("document.getElementById('energyhub-diagnose').click(); true")
        stack.rig.wait(
            lambda: call(stack.site.socket, "status")["outbound"]["diagnostics"]["runs"] > before,
            "the button started no diagnostics run",
            timeout=30,
        )
        assert page.errors() == []
    finally:
        page.close()


@pytest.mark.netns
def test_installer_opens_and_closes_the_tunnel_from_the_page(stack: Stack) -> None:
    def tunnel() -> dict[str, Any]:
        return dict(call(stack.site.socket, "status")["outbound"]["tunnel"])

    assert tunnel()["state"] == "idle"
    page = stack.open("installer")
    try:
        page.js("document.getElementById('energyhub-tunnel-open').click(); true")
        stack.rig.wait(lambda: tunnel()["state"] != "idle", "the tunnel did not open")
        assert tunnel().get("expires_at")
        # The page re-reads the status after the call: it shows when the tunnel closes.
        assert page.wait(
            "!!document.querySelector('#energyhub-tunnel tr[data-key=tunnel-expires]')"
        )
        page.js("document.getElementById('energyhub-tunnel-close').click(); true")
        stack.rig.wait(lambda: tunnel()["state"] == "idle", "the tunnel did not close")
        assert page.wait(
            "!document.querySelector('#energyhub-tunnel tr[data-key=tunnel-expires]')", 15
        )
        assert page.errors() == []
    finally:
        page.close()


@pytest.mark.netns
def test_a_healthy_site_is_green_at_a_glance(stack: Stack) -> None:
    # The customer's IT opened the firewall and the stranger was unplugged.
    assert stack.site.internet is not None
    stack.site.internet.clear()
    address = stack.site.address_of(stack.site.ns(STRANGER.name), "eth0")
    assert address
    stack.site.remove_client(STRANGER.name)

    def gone() -> bool:
        # Someone talks to it (the daemon probes quiet devices the same way, slower).
        netns.ns_run(stack.site.router, ["ping", "-c", "1", "-W", "1", address], check=False)
        return call(stack.site.socket, "status")["inventory"]["unknown"]["count"] == 0

    stack.rig.wait(gone, "the stranger is still counted", timeout=30)
    assert call(stack.site.socket, "diagnose", {"timeout": 60}, timeout=75)["passed"]
    page = stack.open("support", "sv")
    try:
        assert page.js("document.getElementById('energyhub-verdict').dataset.healthy") == "true"
        assert texts(page, "#energyhub-verdict") == ["Anläggningen mår bra."]
        left = texts(page, "#energyhub-devices tr[data-role=unknown]")
        assert len(left) == 1 and shows(left[0], "frånkopplad")  # listed, no longer red
        assert (
            page.js(
                "document.querySelector('#energyhub-devices tr[data-role=unknown]')"
                ".style.backgroundColor"
            )
            == ""
        )
        assert page.errors() == []
        stack.screenshot(page, "luci-status-healthy-sv.png")
    finally:
        page.close()


@pytest.mark.netns
def test_page_says_plainly_when_the_daemon_is_not_running(stack: Stack) -> None:
    # Last in this module: it stops the lab's daemon.
    pid = stack.site.daemon_pid()
    assert pid is not None
    os.kill(pid, 15)
    stack.rig.wait(lambda: not stack.rig.has_object("energyhub"), "energyhubd still on ubus")
    page = stack.browser.page("en")
    try:
        page.goto(stack.rig.url(stack.rig.login("installer")))
        assert page.wait("!!document.getElementById('energyhub-unavailable')")
        assert page.js("document.getElementById('energyhub-unavailable').dataset.kind") == "down"
        assert shows(texts(page, "#energyhub-unavailable")[0], "is not running")
        stack.screenshot(page, "luci-daemon-down.png")
        # The open page comes back by itself with the daemon (its next poll).
        stack.site.start_daemon()
        assert page.wait("!!document.getElementById('energyhub-devices')", 30)
    finally:
        page.close()
