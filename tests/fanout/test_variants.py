"""The wire variants are defined once, in fastpush/protocol/variants.py. The compiled fan-out keeps
a C mirror (`cpdef enum Variant` in _fanout.pxd): it must have the same members, and both
implementations must treat as reliable exactly the variants the Python definition names."""
from __future__ import annotations

import asyncio
import logging

import pytest
from picows import WSTransport

from fastpush import _fanout, _fanout_py
from fastpush.handshake import variant_of
from fastpush.protocol.codecs import codec_for
from fastpush.protocol.json_protocol import (
    JSON_RELIABLE_V1,
    JSON_V1,
    PROTOBUF_RELIABLE_V1,
    PROTOBUF_V1,
    ServerSource,
)
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.variants import RELIABLE_VARIANTS, Variant
from tests.fanout.test_fanout_twins import CapturingTransport

IMPLEMENTATIONS = (_fanout, _fanout_py)


def test_the_compiled_enum_mirrors_the_python_one_member_by_member():
    compiled = [(member.name, member.value) for member in _fanout.Variant]
    assert compiled == [(member.name, member.value) for member in Variant]
    assert issubclass(_fanout.Variant, int)


def test_both_implementations_use_the_python_definitions():
    assert _fanout_py.RELIABLE_VARIANTS is RELIABLE_VARIANTS
    assert _fanout.RELIABLE_VARIANTS is RELIABLE_VARIANTS


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=["compiled", "python"])
def test_exactly_the_reliable_variants_are_numbered_and_buffered(impl):
    loop = asyncio.new_event_loop()
    conns, captures = [], []
    for variant in Variant:
        conn = impl.Connection(variant.name, None, "h", None, variant)
        capture = CapturingTransport()
        conn.transport = WSTransport(False, capture, logging.getLogger("tests"), loop)
        conns.append(conn)
        captures.append(capture)

    async def send() -> int:
        return impl.fanout(conns, impl.Frames(Payload(DataType.TEXT, b"hi"), ServerSource()))

    try:
        assert loop.run_until_complete(send()) == len(conns)
        for conn, capture in zip(conns, captures, strict=True):
            reliable = conn.variant in RELIABLE_VARIANTS
            assert (conn.sequence_id, len(conn.replay or ())) == ((1, 1) if reliable else (0, 0)), conn.connection_id
            assert capture.data, conn.connection_id
            assert type(conn.variant) is int  # a plain number, whatever enum it was given as
    finally:
        for capture in captures:
            capture.close()
        loop.close()


def test_subprotocols_and_codecs_cover_every_variant():
    assert {variant_of(p) for p in (None, "unknown", JSON_V1, JSON_RELIABLE_V1, PROTOBUF_V1, PROTOBUF_RELIABLE_V1)} \
        == set(Variant)
    assert [v for v in Variant if codec_for(v) is None] == [Variant.RAW]
