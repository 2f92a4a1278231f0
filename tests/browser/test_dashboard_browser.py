"""The dashboard in a real browser: headless Chromium (Debian's `chromium` package) driven by
Playwright, against `fastpush serve` as a process. The test logs in with the URL fastpush printed,
watches the overview's connection count follow real SDK clients, sees a REST send in the Live
Trace, uses the test client to join a group and get a message sent through REST, closes a
connection from the hub view, and fails on any error in the browser's console.

Screenshots go to the test's temporary directory, and also to $FASTPUSH_SCREENSHOTS when it is
set (docs/images/ holds the ones the README shows: FASTPUSH_SCREENSHOTS=docs/images)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cli_process import STARTUP_TIMEOUT, ServeProcess

playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the test extra)")

pytestmark = pytest.mark.timeout(180)

WAIT_MS = 20_000  # the overview samples every 2 s; a figure shows within two samples and a poll
HUB = "browserHub"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    return path


class Server:
    """`fastpush serve` with its printed dashboard URL; the rest of its output is drained."""

    def __init__(self) -> None:
        self.process = ServeProcess()
        self.login_url = self._dashboard_line()
        self.output = self.process.output
        threading.Thread(target=self._drain, daemon=True).start()

    def _dashboard_line(self) -> str:
        for _ in range(200):
            line = self.process.proc.stdout.readline()
            self.process.output.append(line)
            if line.startswith("Dashboard: "):
                return line.split(" ", 1)[1].strip()
            if not line:
                break
        raise AssertionError(f"no dashboard URL within {STARTUP_TIMEOUT} s:\n" + "".join(self.process.output))

    def _drain(self) -> None:
        for line in self.process.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM)


@pytest.fixture
def fastpush():
    server = Server()
    yield server
    server.stop()


@pytest.fixture
def browser_page(tmp_path):
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda message: errors.append(f"console {message.type}: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        # The console says only "Failed to load resource: ... 404": name what failed.
        page.on("response", lambda response: errors.append(f"HTTP {response.status}: {response.request.method} "
                                                           f"{response.url}") if response.status >= 400 else None)
        yield page, errors
        browser.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / f"{name}.png")
    target = os.environ.get("FASTPUSH_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=Path(target) / f"dashboard-{name}.png")


def test_the_dashboard_in_a_browser(fastpush, browser_page, tmp_path):
    page, errors = browser_page
    expect = playwright.expect
    service = WebPubSubServiceClient.from_connection_string(fastpush.process.connection_string, hub=HUB)

    # Log in with the printed URL: the browser ends on the dashboard, the token out of its address.
    assert "/dashboard/login?token=" in fastpush.login_url
    page.goto(fastpush.login_url)
    page.wait_for_url(re.compile(r".*/dashboard/#overview$"), timeout=WAIT_MS)
    assert "token" not in page.url
    connections = page.locator("#value-connections")
    expect(connections).to_have_text("0", timeout=WAIT_MS)

    # The connection count follows real SDK clients as they connect and leave.
    clients = [WebPubSubClient(service.get_client_access_token(user_id=f"sdk{i}")["url"]) for i in range(3)]
    for client in clients:
        client.open()
    try:
        expect(connections).to_have_text("3", timeout=WAIT_MS)
        screenshot(page, tmp_path, "overview")
        clients[0].close()
        clients[1].close()
        expect(connections).to_have_text("1", timeout=WAIT_MS)
    finally:
        for client in clients:
            client.close()
    expect(connections).to_have_text("0", timeout=WAIT_MS)

    # A REST send shows in the Live Trace.
    page.click("nav button[data-tab=trace]")
    expect(page.locator("#trace-state")).to_have_text("live", timeout=WAIT_MS)
    service.send_to_all("hello from REST", content_type="text/plain")
    rest_line = page.locator("#trace-table tbody tr[data-kind=rest]", has_text=f"/api/hubs/{HUB}/:send")
    expect(rest_line.first).to_contain_text("202", timeout=WAIT_MS)

    # The test client: connect as a user, join a group, receive what REST sends to that group.
    page.click("nav button[data-tab=client]")
    page.fill("#client-form input[name=hub]", HUB)
    page.fill("#client-form input[name=user]", "operator")
    page.click("#client-connect")
    expect(page.locator("#client-state")).to_contain_text("connected as", timeout=WAIT_MS)
    page.fill("#client-join input[name=group]", "room")
    page.click("#client-join button[value=joinGroup]")
    expect(page.locator("#client-log tbody tr[data-type=ack]").first).to_contain_text('"success":true',
                                                                                      timeout=WAIT_MS)
    service.send_to_group("room", "to the room", content_type="text/plain")
    received = page.locator("#client-log tbody tr[data-type=message]")
    expect(received.first).to_contain_text("to the room", timeout=WAIT_MS)
    screenshot(page, tmp_path, "test-client")

    # The Live Trace saw the test client's joinGroup and the REST send to the group.
    page.click("nav button[data-tab=trace]")
    expect(page.locator("#trace-table tbody tr[data-event=joinGroup]").first).to_contain_text("room",
                                                                                             timeout=WAIT_MS)
    screenshot(page, tmp_path, "live-trace")

    # The hub view lists the test client's connection; closing it there ends the test client's socket.
    page.click("nav button[data-tab=hubs]")
    page.click(f"#hub-table tbody tr[data-hub={HUB}]")
    row = page.locator("#conn-table tbody tr", has_text="operator")
    expect(row).to_contain_text("room", timeout=WAIT_MS)
    screenshot(page, tmp_path, "hubs")
    row.locator("button").click()
    page.click("nav button[data-tab=client]")
    expect(page.locator("#client-state")).to_contain_text("disconnected (1000", timeout=WAIT_MS)

    assert errors == [], errors
