"""Scraping /metrics in tests, as Prometheus does: one GET, the body parsed with prometheus_client's
own parser (a body it cannot parse fails the test)."""
from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def get(url: str, authorization: str | None = None, method: str = "GET") -> Answer:
    headers = {"Authorization": authorization} if authorization is not None else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()},
                          response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode())


def parse(text: str) -> dict[Key, float]:
    """Every sample: (name, its labels) -> value."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: dict[Key, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


class Scraper:
    """Scrapes one URL (with the access key, or none for the separate listener), counting its own
    scrapes: they show in fastpush_rest_requests_total{operation="metrics"}."""

    def __init__(self, url: str, access_key: str | None = None):
        self.url = url
        self.authorization = f"Bearer {access_key}" if access_key else None
        self.scrapes = 0

    async def scrape(self) -> dict[Key, float]:
        answer = await asyncio.to_thread(get, self.url, self.authorization)
        self.scrapes += 1
        assert answer.status == 200, (answer.status, answer.body)
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(answer.body)

    async def until(self, condition: Callable[[dict[Key, float]], bool], seconds: float = 15.0) -> dict[Key, float]:
        """The first scrape for which `condition` holds; AssertionError with the last one after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            samples = await self.scrape()
            if condition(samples):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"the condition did not hold within {seconds} s; last scrape: {samples}")
            await asyncio.sleep(0.05)
