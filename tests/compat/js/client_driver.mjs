// Drives one WebPubSubClient of @azure/web-pubsub-client on behalf of tests/compat/test_js_client_sdk.py
// and tests/compat/test_client_sdk_faults.py: the Python side calls client methods and sees the
// client's events, so it can check them against what its own test clients receive.
//
//   node client_driver.mjs '{"url": "ws://...", "protocol": "reliable" | "json",
//                            "credential": false, "options": {<WebPubSubClientOptions>}}'
//
// "credential": true hands the SDK a {getClientAccessUrl} credential instead of the URL string.
// stdin: one JSON call per line, run concurrently (every client method returns a promise):
//   {"id": 1, "method": "joinGroup", "args": ["room"]}
// stdout: one JSON line per call result and per client event:
//   {"id": 1, "ok": true, "result": {"ackId": 1, "isDuplicated": false}}
//   {"id": 2, "ok": false, "error": {"name", "message", "ackId", "errorDetail"}}
//   {"event": "group-message", "args": {"message": {"kind": "groupData", ...}}}
// Binary data travels both ways as {"$bytes": "<base64>"} (an ArrayBuffer on the JS side).
// The process exits when stdin ends.
import readline from "node:readline";
import { WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";

const config = JSON.parse(process.argv[2]);
const options = {
  ...config.options,
  protocol: config.protocol === "json" ? WebPubSubJsonProtocol() : WebPubSubJsonReliableProtocol(),
};
const credential = config.credential ? { getClientAccessUrl: async () => config.url } : config.url;
const client = new WebPubSubClient(credential, options);

function revive(_key, value) {
  if (value && typeof value === "object" && "$bytes" in value) {
    const bytes = Buffer.from(value.$bytes, "base64");
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  }
  return value;
}

function replace(_key, value) {
  return value instanceof ArrayBuffer ? { $bytes: Buffer.from(value).toString("base64") } : value;
}

function emit(line) {
  process.stdout.write(JSON.stringify(line, replace) + "\n");
}

for (const event of ["connected", "disconnected", "stopped", "server-message", "group-message", "rejoin-group-failed"]) {
  client.on(event, (args) => emit({ event, args }));
}

async function call(id, method, args) {
  try {
    const result = await client[method](...args);
    emit({ id, ok: true, result: result ?? null });
  } catch (error) {
    const { name, message, ackId, errorDetail } = error;
    emit({ id, ok: false, error: { name, message, ackId, errorDetail } });
  }
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  const { id, method, args = [] } = JSON.parse(line, revive);
  call(id, method, args);
}
process.exit(0);
