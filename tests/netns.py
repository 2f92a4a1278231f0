"""Separate hosts on one machine for partition tests: one network namespace per host, joined by
veth links, all made by the test and removed after it (deleting a namespace deletes its links).

Addresses live only inside the namespaces, except the root end of a `front` link: the test's
own clients (in this process, in the root namespace) reach a host through it. Those ends take a
/30 from 100.64.0.0/10 (shared address space, unused here) that no root route already covers,
and vanish with the namespace. Links are cut with `ip link set DEV down` (no netem here)."""
from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess

SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (for a skip), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"fpprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        if veth.returncode != 0:
            return f"ip link add ... type veth failed: {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe)
    return None


class Hosts:
    """Namespaces named `<tag>-<host>` with a tag unique to this run; `remove()` deletes them all."""

    def __init__(self) -> None:
        self.tag = "fp" + secrets.token_hex(3)
        self.namespaces: list[str] = []
        self._links = 0

    def add(self, host: str) -> str:
        name = f"{self.tag}-{host}"
        self._run("netns", "add", name)
        self.namespaces.append(name)
        self._run("-n", name, "link", "set", "lo", "up")
        return name

    def exec_prefix(self, namespace: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", namespace)

    def link(self, first: str, first_address: str, second: str, second_address: str) -> tuple[str, str]:
        """A veth link between two namespaces with the given addresses (CIDR); its two devices."""
        devices = self._veth(first, second)
        for namespace, device, address in zip((first, second), devices, (first_address, second_address),
                                              strict=True):
            self._run("-n", namespace, "addr", "add", address, "dev", device)
            self._run("-n", namespace, "link", "set", device, "up")
        return devices

    def front(self, namespace: str) -> tuple[str, str]:
        """A link from the root namespace to `namespace`: (the host's address there, its device)."""
        network = self._free_slash30()
        root_address, host_address = list(network.hosts())
        root_device, device = self._veth(None, namespace)
        self._run("addr", "add", f"{root_address}/30", "dev", root_device)
        self._run("link", "set", root_device, "up")
        self._run("-n", namespace, "addr", "add", f"{host_address}/30", "dev", device)
        self._run("-n", namespace, "link", "set", device, "up")
        return str(host_address), device

    def set_link(self, namespace: str, device: str, *, up: bool) -> None:
        self._run("-n", namespace, "link", "set", device, "up" if up else "down")

    def remove(self) -> None:
        """Delete every namespace (and so every link) this run made; the processes in them must
        have exited (a namespace a process still holds keeps its links)."""
        for name in self.namespaces:
            _ip("netns", "del", name)
        self.namespaces.clear()

    def _veth(self, first: str | None, second: str) -> tuple[str, str]:
        self._links += 1
        devices = (f"{self.tag}{self._links}a", f"{self.tag}{self._links}b")
        self._run("link", "add", devices[0], "type", "veth", "peer", "name", devices[1])
        if first is not None:
            self._run("link", "set", devices[0], "netns", first)
        self._run("link", "set", devices[1], "netns", second)
        return devices

    def _free_slash30(self) -> ipaddress.IPv4Network:
        routes = json.loads(self._run("-4", "-j", "route", "show").stdout or "[]")
        taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r["dst"] != "default"]
        for _ in range(100):
            candidate = ipaddress.ip_network((int(SHARED_SPACE.network_address) + 4 * random.randrange(2**20), 30))
            if not any(candidate.overlaps(network) for network in taken):
                return candidate
        raise RuntimeError("no free /30 in 100.64.0.0/10 for a front link")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = _ip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return done
