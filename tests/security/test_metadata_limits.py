"""Message metadata is checked before anything is done with it: a key must be an HTTP header-name
token (it becomes `x-webpubsub-metadata-<key>` upstream), a value must hold no control character
(CR/LF would split the upstream's headers), and sizes are bounded (256-byte keys, 1,024-byte values,
8 KiB in all). A bad one is a BadRequest ack, or without an ackId a 1007 close, as for any malformed
message; nothing reaches the group or the upstream."""
from __future__ import annotations

import pytest
import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from fastpush.protocol.payload import MAX_METADATA_BYTES, MAX_METADATA_KEY_BYTES, MAX_METADATA_VALUE_BYTES
from tests.events.upstream_server import Upstream
from tests.helpers import JSON_V1, ServerView, client_url, connect
from tests.webpubsub_proto import Downstream
from tests.webpubsub_proto import Upstream as UpstreamMessage

KEY = "metadata-limits-access-key-0123456789abcdefgh"
ROLES = ["webpubsub.sendToGroup"]

BAD = {
    "not an object": ["a", "b"],
    "a number value": {"k": 1},
    "a null value": {"k": None},
    "CRLF in a value": {"k": "v\r\nx-injected: 1"},
    "NUL in a value": {"k": "v\x00"},
    "a space in a key": {"bad key": "v"},
    "a colon in a key": {"k:x": "v"},
    "CRLF in a key": {"k\r\nx": "v"},
    "a non-ASCII key": {"clé": "v"},
    "an empty key": {"": "v"},
    "a key too long": {"k" * (MAX_METADATA_KEY_BYTES + 1): "v"},
    "a value too long": {"k": "é" * (MAX_METADATA_VALUE_BYTES // 2 + 1)},
    "too much in all": {f"k{i}": "v" * 1000 for i in range(MAX_METADATA_BYTES // 1000 + 1)},
    "keys differing in case only": {"Trace": "a", "trace": "b"},
}


@pytest.fixture
def upstream():
    up = Upstream([KEY])
    yield up
    up.close()


@pytest.fixture
async def server(upstream):
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*")
    async with fastpush.Server(port=0, access_key=KEY,
                               config=Config(hubs={"h": HubSettings(event_handlers=[handler])})) as srv:
        yield srv


@pytest.mark.parametrize("metadata", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize("kind", ["sendToGroup", "event"])
async def test_bad_metadata_is_refused_and_goes_nowhere(server, upstream, kind, metadata):
    view = ServerView.of(server)
    member = await connect(view, "h", JSON_V1, groups=["g"])
    sender = await connect(view, "h", JSON_V1, roles=ROLES)
    target = {"group": "g"} if kind == "sendToGroup" else {"event": "e"}
    ack = await sender.request({"type": kind, **target, "dataType": "text", "data": "x", "metadata": metadata})
    assert ack["success"] is False and ack["error"]["name"] == "BadRequest"
    assert "metadata" in ack["error"]["message"]
    await sender.send({"type": kind, **target, "dataType": "text", "data": "x", "metadata": metadata})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await sender.recv()
    assert closed.value.rcvd.code == 1007
    await member.expect_silence(0.2)
    assert upstream.events("e") == []


async def test_the_limits_themselves_are_allowed(server):
    view = ServerView.of(server)
    member = await connect(view, "h", JSON_V1, groups=["g"])
    sender = await connect(view, "h", JSON_V1, roles=ROLES)
    metadata = {"k" * MAX_METADATA_KEY_BYTES: "é" * (MAX_METADATA_VALUE_BYTES // 2)}
    filler = MAX_METADATA_BYTES - MAX_METADATA_KEY_BYTES - MAX_METADATA_VALUE_BYTES
    metadata.update({f"f{i:03d}": "x" * 96 for i in range(filler // 100)})  # 100 bytes each
    metadata["z"] = "x" * (filler % 100 - 1)  # and the rest: exactly 8 KiB in all
    assert sum(len(k) + len(v.encode()) for k, v in metadata.items()) == MAX_METADATA_BYTES
    assert (await sender.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x",
                                  "metadata": metadata}))["success"]
    assert (await member.recv())["metadata"] == metadata


async def test_a_protobuf_map_repeating_a_key_is_refused(server):
    ws = await websockets.connect(client_url(ServerView.of(server), "h", roles=ROLES),
                                  subprotocols=["protobuf.webpubsub.azure.v1"])
    await ws.recv()
    entry = b"\x0a\x01k\x12\x01v"  # MetadataEntry{key: "k", value: "v"}
    send = UpstreamMessage()
    send.send_to_group_message.group = "g"
    send.send_to_group_message.ack_id = 5
    send.send_to_group_message.data.text_data = "x"
    body = send.send_to_group_message.SerializeToString() + (b"\x32" + bytes([len(entry)]) + entry) * 2
    await ws.send(b"\x0a" + bytes([len(body)]) + body)  # UpstreamMessage{send_to_group_message: body}
    ack = Downstream.FromString(await ws.recv()).ack_message
    assert (ack.ack_id, ack.success, ack.error.name) == (5, False, "BadRequest")
    await ws.close()
