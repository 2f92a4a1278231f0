"""The seed's Java quickstart (quickstart-push-messages-from-server.md, Java tabs) run unchanged against fastpush.

The two Maven projects under tests/compat/java/ hold the seed's code verbatim. Each is compiled once per test
session (`mvn compile` also fetches the dependencies into ~/.m2 on a fresh machine); the programs are then
started with plain `java -cp`, because `mvn exec:java` as in the seed would add seconds of Maven start-up to
every run without testing anything more.

Each runs on every Java server SDK version in tests/compat/sdk_versions.py (the seed's 1.0.0 and the newest
release), chosen with `-Dwebpubsub.version=` and built into target/webpubsub-<version>/ (test ids
`[java-server-<version>-...]`); on the pure-Python twin's pass only the newest.

Both transports are tested: the Java SDK accepts an http:// connection string, and a user with a dev
certificate runs over https, where the JVM is made to trust the dev CA through a truststore given on the
command line (the seed's code stays unchanged).
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.compat.sdk_versions import java_server_versions

JAVA_DIR = Path(__file__).parent / "java"
MAIN_CLASS = "com.webpubsub.quickstart.App"
HUB = "myHub1"  # the seed's hub name
MESSAGE = "Hello World"
EXPECTED = f"Message received: {MESSAGE}"

BUILD_TIMEOUT = 300  # per project; a cold ~/.m2 downloads the Azure SDK, Netty, Reactor, Jackson and plugins
CONNECT_TIMEOUT = 60  # JVM start, SDK start-up, negotiate and WebSocket handshake
PUBLISH_TIMEOUT = 60
RECEIVE_TIMEOUT = 20


def _require(tool: str) -> str:
    """A missing JDK or Maven must fail loudly in CI, never skip: this test is the only Java coverage."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"the Java quickstart test needs `{tool}` on PATH (JDK 17+ and Apache Maven 3.6+), "
                    f"e.g. `apt-get install openjdk-17-jdk-headless maven`", pytrace=False)
    return path


def _build(project: str, version: str) -> str:
    """Compile one seed project on one SDK version and return the classpath to run it with `java -cp`."""
    mvn = _require("mvn")
    _require("java")
    directory = JAVA_DIR / project
    output = directory / "target" / f"webpubsub-{version}"  # the pom's <build><directory>
    classpath_file = output / "classpath.txt"
    command = [mvn, "-B", "-q", "-ntp", "compile", "dependency:build-classpath", f"-Dwebpubsub.version={version}",
               f"-Dmdep.outputFile={classpath_file}"]
    try:
        result = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`mvn compile` of {project} took over {BUILD_TIMEOUT}s:\n{exc.stdout}\n{exc.stderr}")
    if result.returncode != 0:
        pytest.fail(f"`mvn compile` of {project} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return os.pathsep.join([str(output / "classes"), classpath_file.read_text().strip()])


@pytest.fixture(scope="session")
def _built() -> dict[str, dict[str, str]]:
    """{SDK version: {project: classpath}}, filled as the versions' tests first run."""
    return {}


@pytest.fixture(params=java_server_versions(), ids=lambda version: f"java-server-{version}")
def java_classpaths(request, _built) -> dict[str, str]:
    """Each version built once per session: Maven's start-up and up-to-date checks cost seconds even when
    nothing changed."""
    version = request.param
    if version not in _built:
        _built[version] = {project: _build(project, version) for project in ("subscriber", "publisher")}
    return _built[version]


@pytest.fixture(params=["http", "https"])
def target(request, tmp_path):
    """(running server, extra JVM options): for https, a PKCS12 truststore holding the test CA."""
    if request.param == "http":
        return request.getfixturevalue("server"), []
    running = request.getfixturevalue("tls_server")
    keytool = _require("keytool")
    truststore, password = tmp_path / "truststore.p12", "changeit"
    subprocess.run([keytool, "-importcert", "-noprompt", "-alias", "fastpush-test-ca",
                    "-file", str(running.ca_file), "-keystore", str(truststore),
                    "-storetype", "PKCS12", "-storepass", password],
                   check=True, capture_output=True, timeout=60)
    return running, [f"-Djavax.net.ssl.trustStore={truststore}", f"-Djavax.net.ssl.trustStorePassword={password}"]


class _Lines:
    """Collects a process's output lines on a thread, so the test can wait for one with a deadline."""

    def __init__(self, stream):
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\r\n"))
        self._queue.put(None)

    def wait_for(self, expected: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:  # the process exited
                return False
            self.seen.append(line)
            if line == expected:
                return True
        return False

    def text(self) -> str:
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.seen.append(line)
        return "\n".join(self.seen)


def _hub_connections(running) -> int:
    return running.call(lambda: running.server.node.hub(HUB).connection_count)


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(2 * BUILD_TIMEOUT + 120)  # the session's first Java test also pays for the Maven build
def test_java_quickstart_push_messages_from_server(java_classpaths, target):
    running, jvm_options = target
    java = _require("java")
    before = _hub_connections(running)  # the seed's fixed hub may be shared with other tests on this server

    # The subscriber blocks on System.in.read(): hand it a pipe that stays open until we kill it.
    subscriber = subprocess.Popen(
        [java, *jvm_options, "-cp", java_classpaths["subscriber"], MAIN_CLASS, running.connection_string, HUB],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = _Lines(subscriber.stdout)
    try:
        connected = _wait_until(lambda: subscriber.poll() is not None or _hub_connections(running) > before,
                                CONNECT_TIMEOUT)
        assert connected and subscriber.poll() is None, \
            f"the Java subscriber did not connect to hub {HUB}:\n{output.text()}"

        publisher = subprocess.run(
            [java, *jvm_options, "-cp", java_classpaths["publisher"], MAIN_CLASS,
             running.connection_string, HUB, MESSAGE],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PUBLISH_TIMEOUT)
        assert publisher.returncode == 0, \
            f"the Java publisher failed ({publisher.returncode}):\n{publisher.stdout}\n{publisher.stderr}"

        assert output.wait_for(EXPECTED, RECEIVE_TIMEOUT), \
            f"the Java subscriber did not print {EXPECTED!r}:\n{output.text()}"
    finally:
        subscriber.kill()
        subscriber.wait(timeout=10)
        subscriber.stdin.close()

    # Killing the JVM drops its TCP connection without a close frame; the server must still let it go.
    assert _wait_until(lambda: _hub_connections(running) <= before, 10), \
        f"hub {HUB} still counts the killed Java subscriber's connection"
