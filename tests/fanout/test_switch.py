"""FASTPUSH_NO_EXTENSIONS=1 makes the whole server run on the pure-Python twin: in a fresh process,
every fastpush module that holds a fan-out name holds the twin's, the compiled module is never
imported, and a live server's connections are twin connections (and the other way round
without the variable)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastpush import fanout
from tests.cli_process import REPO

COMPILED, TWIN = "fastpush._fanout", "fastpush._fanout_py"

# Imports the whole server (the package, its CLI and workers), looks at what every fastpush module
# took from the fan-out, then serves one client and sends it a message.
PROBE = """
import asyncio, json, sys

import websockets

import fastpush, fastpush.cli, fastpush.workers
from fastpush import fanout

IMPLEMENTATIONS = ("fastpush._fanout", "fastpush._fanout_py")
loaded = sorted(name for name in IMPLEMENTATIONS if name in sys.modules)
taken = {}
for name, module in sorted(sys.modules.items()):
    if not name.startswith("fastpush.") or name in IMPLEMENTATIONS:
        continue
    for attr, value in vars(module).items():
        source = getattr(value, "__module__", None) if not isinstance(value, type(sys)) else value.__name__
        if source in IMPLEMENTATIONS:
            taken[name + "." + attr] = source


async def serve():
    async with fastpush.Server(port=0) as server:
        async with websockets.connect(server.client_access_url("probe")) as ws:
            await server.hub("probe").send_to_all("hi", content_type="text/plain")
            received = await asyncio.wait_for(ws.recv(), 10)
            conns = list(server.hub("probe")._hub.tables.connections.values())
            delivered = len(conns)
            bases = [c.__module__ for conn in conns for c in type(conn).__mro__]
            return received, sorted(set(bases) & set(IMPLEMENTATIONS))


received, bases = asyncio.run(serve())
print(json.dumps({"implementation": fanout.IMPLEMENTATION, "loaded": loaded, "taken": taken,
                  "received": received, "bases": bases}))
"""


def _probe(switch: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "FASTPUSH_NO_EXTENSIONS"}
    env["PYTHONPATH"] = str(REPO)
    if switch is not None:
        env["FASTPUSH_NO_EXTENSIONS"] = switch
    return subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=False,
                          timeout=60)


@pytest.mark.parametrize(("switch", "expected"), [(None, COMPILED), ("0", COMPILED), ("1", TWIN)])
def test_the_switch_chooses_the_implementation_of_the_whole_server(switch, expected):
    result = _probe(switch)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["implementation"] == expected
    assert report["loaded"] == [expected]  # the other one is never even imported
    taken = report["taken"]
    for user in ("fastpush.hub.fanout", "fastpush.hub.Tables", "fastpush.client_connection.fanout",
                 "fastpush.client_connection.trim_transport", "fastpush.client_connection.Connection"):
        assert user in taken, sorted(taken)
    assert set(taken.values()) == {expected}, taken
    assert (report["received"], report["bases"]) == ("hi", [expected])


def test_a_bad_value_is_refused():
    result = _probe("yes")
    assert result.returncode != 0
    assert "FASTPUSH_NO_EXTENSIONS must be 1" in result.stderr


def test_this_process_uses_what_its_environment_asks_for():
    """Which implementation the rest of this test run exercises (./check runs it with both)."""
    wanted = TWIN if os.environ.get("FASTPUSH_NO_EXTENSIONS") == "1" else COMPILED
    assert wanted == fanout.IMPLEMENTATION
