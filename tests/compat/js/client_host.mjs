// Hosts the WebPubSubClients of one installed version of @azure/web-pubsub-client for
// tests/compat/drivers/js_client.py: the Python side creates clients, calls their methods and
// sees their events, so it can check them against what its own test clients receive.
//
//   node client_host.mjs <package>    e.g. @azure/web-pubsub-client, or an npm alias of another
//                                     version such as @azure/web-pubsub-client-1.1.0
//
// stdin: one JSON call per line, run concurrently (every client method returns a promise);
// "client" numbers the client, chosen by the Python side:
//   {"id": 1, "client": 1, "method": "create",
//    "args": [{"url": "ws://...", "protocol": "reliable" | "json", "credential": false,
//              "options": {<WebPubSubClientOptions>}}]}
//   {"id": 2, "client": 1, "method": "joinGroup", "args": ["room"]}
//   {"id": 3, "client": 1, "method": "dispose"}     stops the client and forgets it
//   {"id": 4, "client": 1, "method": "abort", "args": ["k1"]}   aborts the AbortSignal named "k1"
// "credential": true hands the SDK a {getClientAccessUrl} credential instead of the URL string.
// stdout: one JSON line per call result and per client event:
//   {"id": 2, "ok": true, "result": {"ackId": 1, "isDuplicated": false}}
//   {"id": 2, "ok": false, "error": {"name", "message", "ackId", "errorDetail"}}
//   {"client": 1, "event": "group-message", "args": {"message": {"kind": "groupData", ...}}}
// Binary data travels both ways as {"$bytes": "<base64>"} (an ArrayBuffer on the JS side).
// An argument {"$abortSignal": "k1"} is a new AbortController's signal, named k1 for "abort".
// Group streams: {"method": "openGroupStream", "args": ["room", {<OpenGroupStreamOptions>}]} keeps the
// returned stream under its streamId for "streamWrite" [streamId, content, dataType], "streamEnd"
// [streamId] and "streamAbort" [streamId, {message, userErrorCode}]; its onError listener is the
// event "stream-error" {streamId, name, message}. "onGroupStream" [options] subscribes: every stream
// seen is the event "stream-opened" {group, streamId}, each of its messages "stream-message" {group,
// streamId, dataType, data, stream}, and its end "stream-ended" {group, streamId, error}.
// The process exits when stdin ends.
import readline from "node:readline";

const { WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol } = await import(process.argv[2]);
const clients = new Map();
const aborts = new Map();
const streams = new Map(); // "<client>/<streamId>" -> the stream openGroupStream returned

function revive(_key, value) {
  if (value && typeof value === "object" && "$bytes" in value) {
    const bytes = Buffer.from(value.$bytes, "base64");
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  }
  if (value && typeof value === "object" && "$abortSignal" in value) {
    const controller = new AbortController();
    aborts.set(value.$abortSignal, controller);
    return controller.signal;
  }
  return value;
}

function replace(_key, value) {
  return value instanceof ArrayBuffer ? { $bytes: Buffer.from(value).toString("base64") } : value;
}

function emit(line) {
  process.stdout.write(JSON.stringify(line, replace) + "\n");
}

function create(number, config) {
  const options = {
    ...config.options,
    protocol: config.protocol === "json" ? WebPubSubJsonProtocol() : WebPubSubJsonReliableProtocol(),
  };
  const credential = config.credential ? { getClientAccessUrl: async () => config.url } : config.url;
  const client = new WebPubSubClient(credential, options);
  for (const event of ["connected", "disconnected", "stopped", "server-message", "group-message", "rejoin-group-failed"]) {
    client.on(event, (args) => emit({ client: number, event, args }));
  }
  clients.set(number, client);
}

function dispose(number) {
  clients.get(number)?.stop(); // a no-op once stopped
  clients.delete(number);
}

async function call(id, number, method, args) {
  try {
    let result = null;
    if (method === "create") {
      create(number, ...args);
    } else if (method === "dispose") {
      dispose(number);
    } else if (method === "openGroupStream") {
      const stream = await clients.get(number).openGroupStream(...args);
      streams.set(`${number}/${stream.streamId}`, stream);
      stream.onError((error) => emit({ client: number, event: "stream-error",
                                       args: { streamId: stream.streamId, name: error.name, message: error.message } }));
      result = { streamId: stream.streamId };
    } else if (method === "streamWrite") {
      await streams.get(`${number}/${args[0]}`).write(args[1], args[2]);
    } else if (method === "streamEnd") {
      await streams.get(`${number}/${args[0]}`).end();
    } else if (method === "streamAbort") {
      await streams.get(`${number}/${args[0]}`).abort(args[1]);
    } else if (method === "onGroupStream") {
      clients.get(number).onGroupStream(async (stream) => {
        const names = { group: stream.groupName, streamId: stream.streamId };
        emit({ client: number, event: "stream-opened", args: names });
        try {
          for await (const m of stream) {
            emit({ client: number, event: "stream-message",
                   args: { ...names, dataType: m.dataType, data: m.data, stream: m.stream } });
          }
          emit({ client: number, event: "stream-ended", args: { ...names, error: null } });
        } catch (error) {
          emit({ client: number, event: "stream-ended", args: { ...names, error: { name: error.name, message: error.message, userErrorCode: error.userErrorCode } } });
        }
      }, ...args);
    } else if (method === "abort") {
      aborts.get(args[0])?.abort();
      aborts.delete(args[0]);
    } else {
      result = await clients.get(number)[method](...args);
    }
    emit({ id, ok: true, result: result ?? null });
  } catch (error) {
    const { name, message, ackId, errorDetail } = error;
    emit({ id, ok: false, error: { name, message, ackId, errorDetail } });
  }
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  const { id, client, method, args = [] } = JSON.parse(line, revive);
  call(id, client, method, args);
}
process.exit(0);
