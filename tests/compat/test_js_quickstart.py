"""The JavaScript "Push messages from server" quickstart, run unmodified against fastpush.

The JS server SDK (@azure/web-pubsub 1.2) refuses http:// endpoints, so these tests use the https
`tls_server` and let Node trust its test CA through NODE_EXTRA_CA_CERTS, as a user would.
The programs live in tests/compat/js/quickstart; `npm ci` in tests/compat/js installs the SDKs.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import pytest

from tests.helpers import client_url

JS_DIR = Path(__file__).parent / "js"
QUICKSTART = JS_DIR / "quickstart"
NODE_PACKAGES = ("@azure/web-pubsub", "@azure/web-pubsub-client", "ws")
HUB = "myHub1"  # hard-coded in publish.js, as in the quickstart
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def node_env(tls_server) -> dict[str, str]:
    """The environment of a quickstart user: the CA trusted and the connection string exported.

    Missing Node or packages is a failure, not a skip: CI runs `npm ci` first, so a silent skip
    would hide a broken setup.
    """
    missing = [name for name in NODE_PACKAGES if not (JS_DIR / "node_modules" / name).is_dir()]
    if shutil.which("node") is None or missing:
        pytest.fail(f"node and the JS SDKs are needed (missing: {missing or 'node'}); "
                    f"run `npm ci` in {JS_DIR}", pytrace=False)
    return {**os.environ, "NODE_EXTRA_CA_CERTS": str(tls_server.ca_file),
            "WebPubSubConnectionString": tls_server.connection_string}


async def start(script: str, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("node", script, *args, cwd=QUICKSTART, env=env,
                                                stdout=PIPE, stderr=STDOUT)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


async def wait_for_line(process: asyncio.subprocess.Process, expected: str) -> None:
    """Read the program's output until the line `expected`; on timeout or exit, fail showing the output."""
    seen: list[str] = []

    async def scan() -> bool:
        while line := await process.stdout.readline():
            seen.append(line.decode().rstrip("\n"))
            if seen[-1] == expected:
                return True
        return False

    try:
        found = await asyncio.wait_for(scan(), TIMEOUT)
    except TimeoutError:
        found = False
    assert found, f"expected the line {expected!r}; the program printed: {seen}"


async def publish(message: str, env: dict[str, str]) -> None:
    """Run `node publish.js <message>` to completion; the quickstart expects it to exit cleanly."""
    publisher = await start("publish.js", message, env=env)
    try:
        output, _ = await asyncio.wait_for(publisher.communicate(), TIMEOUT)
    finally:
        await stop(publisher)
    assert publisher.returncode == 0, f"publish.js exited {publisher.returncode}: {output.decode()}"


async def test_quickstart_subscriber_receives_published_text(tls_server, node_env):
    """subscribe.mjs (@azure/web-pubsub-client, reliable JSON subprotocol) prints what publish.js sends.

    subscribe.mjs prints nothing when connected, so the test waits until the server knows its user.
    """
    user = "quickstart-" + uuid.uuid4().hex[:8]
    subscriber = await start("subscribe.mjs", client_url(tls_server, HUB, user_id=user), env=node_env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not await tls_server.acall(lambda: tls_server.server.hub(HUB).user_exists(user)):
            assert subscriber.returncode is None, (await subscriber.stdout.read()).decode()
            assert time.monotonic() < deadline, "subscribe.mjs never connected"
            await asyncio.sleep(0.05)
        await publish("Hello World", node_env)
        await wait_for_line(subscriber, "Received message Hello World")
    finally:
        await stop(subscriber)


async def test_plain_websocket_subscriber_receives_raw_text(node_env):
    """The GitHub-sample style subscriber (`ws`, no subprotocol, URL from getClientAccessToken)
    gets the bare text."""
    subscriber = await start("subscribe_ws.js", env=node_env)
    try:
        await wait_for_line(subscriber, "connected")
        await publish("Hello raw", node_env)
        await wait_for_line(subscriber, "Message received: Hello raw")
    finally:
        await stop(subscriber)
