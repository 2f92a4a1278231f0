"""The protobuf subprotocol's schema, built with Google's protobuf runtime as an independent oracle
for fastpush's hand-written codec (the field numbers are listed in docs/protocol.md, "Protobuf
subprotocols")."""
from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
_T = {"string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "uint64": F.TYPE_UINT64, "bool": F.TYPE_BOOL,
      "uint32": F.TYPE_UINT32}

# message name -> [(field name, number, type or message name, oneof index or None, proto3 optional)]
_SCHEMA = {
    "MessageData": [("text_data", 1, "string", 0, False), ("binary_data", 2, "bytes", 0, False),
                    ("protobuf_data", 3, ".google.protobuf.Any", 0, False), ("json_data", 4, "string", 0, False)],
    "SendToGroupMessage": [("group", 1, "string", None, False), ("ack_id", 2, "uint64", None, True),
                           ("data", 3, ".wps.MessageData", None, False), ("no_echo", 4, "bool", None, True),
                           ("ttl_seconds", 5, "uint32", None, True)],
    "EventMessage": [("event", 1, "string", None, False), ("data", 2, ".wps.MessageData", None, False),
                     ("ack_id", 3, "uint64", None, True)],
    "JoinGroupMessage": [("group", 1, "string", None, False), ("ack_id", 2, "uint64", None, True)],
    "LeaveGroupMessage": [("group", 1, "string", None, False), ("ack_id", 2, "uint64", None, True)],
    "SequenceAckMessage": [("sequence_id", 1, "uint64", None, False)],
    "PingMessage": [],
    "UpstreamMessage": [("send_to_group_message", 1, ".wps.SendToGroupMessage", 0, False),
                        ("event_message", 5, ".wps.EventMessage", 0, False),
                        ("join_group_message", 6, ".wps.JoinGroupMessage", 0, False),
                        ("leave_group_message", 7, ".wps.LeaveGroupMessage", 0, False),
                        ("sequence_ack_message", 8, ".wps.SequenceAckMessage", 0, False),
                        ("ping_message", 9, ".wps.PingMessage", 0, False)],
    "ErrorMessage": [("name", 1, "string", None, False), ("message", 2, "string", None, False)],
    "AckMessage": [("ack_id", 1, "uint64", None, False), ("success", 2, "bool", None, False),
                   ("error", 3, ".wps.ErrorMessage", None, True)],
    "DataMessage": [("from", 1, "string", None, False), ("group", 2, "string", None, True),
                    ("data", 3, ".wps.MessageData", None, False), ("sequence_id", 4, "uint64", None, True)],
    "ConnectedMessage": [("connection_id", 1, "string", None, False), ("user_id", 2, "string", None, False),
                         ("reconnection_token", 3, "string", None, False)],
    "DisconnectedMessage": [("reason", 2, "string", None, False)],
    "SystemMessage": [("connected_message", 1, ".wps.ConnectedMessage", 0, False),
                      ("disconnected_message", 2, ".wps.DisconnectedMessage", 0, False)],
    "PongMessage": [],
    "DownstreamMessage": [("ack_message", 1, ".wps.AckMessage", 0, False),
                          ("data_message", 2, ".wps.DataMessage", 0, False),
                          ("system_message", 3, ".wps.SystemMessage", 0, False),
                          ("pong_message", 4, ".wps.PongMessage", 0, False)],
}


def _build():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        any_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    file = descriptor_pb2.FileDescriptorProto(name="wps.proto", package="wps", syntax="proto3",
                                              dependency=["google/protobuf/any.proto"])
    for name, fields in _SCHEMA.items():
        message = file.message_type.add(name=name)
        oneofs = 0
        for field_name, number, kind, oneof, optional in fields:
            field = message.field.add(name=field_name, number=number, label=F.LABEL_OPTIONAL)
            if kind in _T:
                field.type = _T[kind]
            else:
                field.type, field.type_name = F.TYPE_MESSAGE, kind
            if oneof is not None:
                field.oneof_index = 0
                oneofs = 1
            elif optional:  # proto3 `optional`: a synthetic oneof of its own
                field.proto3_optional = True
                field.oneof_index = oneofs + sum(1 for f in message.field if f.proto3_optional) - 1
        if oneofs:
            message.oneof_decl.add(name="message" if name.endswith("Message") else "data")
        for field in message.field:
            if field.proto3_optional:
                message.oneof_decl.add(name="_" + field.name)
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName("wps." + name)) for name in _SCHEMA}


messages = _build()
Upstream = messages["UpstreamMessage"]
Downstream = messages["DownstreamMessage"]
