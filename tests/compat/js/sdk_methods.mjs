// Calls WebPubSubServiceClient methods of @azure/web-pubsub on behalf of tests/compat/test_js_server_sdk.py,
// so the Python side can make one SDK call, then look at what real subscribers received, then make the next.
//
//   node sdk_methods.mjs <connection-string> <hub> [<package>]
//
// <package> is the installed name of the SDK version to drive: "@azure/web-pubsub" (the default) or an npm alias
// such as "@azure/web-pubsub-1.1.4" (see package.json).
//
// stdin: one JSON request per line, handled strictly in order:
//   {"method": "sendToAll", "args": ["hi", {"contentType": "text/plain"}]}
//   {"group": "g1", "method": "addConnection", "args": ["<connection id>"]}   (a method of service.group("g1"))
//   {"has": "listConnections", "group": "g1"}   (whether this SDK version has the method: true or false)
// stdout: one JSON line per request:
//   {"ok": true, "result": <value, null for void>}
//   {"ok": false, "error": {"name", "message", "statusCode", "code"}}
//
// Arguments JSON cannot express are tagged objects:
//   {"$bytes": "<base64>"}                            -> Uint8Array
//   {"$odata": {"strings": [...], "values": [...]}}   -> odata`...` (the SDK's filter helper as a tagged template)
// A paged result (group.listConnections) is walked with byPage() and returned as an array of pages.
import readline from "node:readline";

const [connectionString, hub, sdkPackage = "@azure/web-pubsub"] = process.argv.slice(2);
const { WebPubSubServiceClient, odata } = await import(sdkPackage);
const service = new WebPubSubServiceClient(connectionString, hub);

function revive(_key, value) {
  if (value && typeof value === "object" && "$bytes" in value) {
    return new Uint8Array(Buffer.from(value.$bytes, "base64"));
  }
  if (value && typeof value === "object" && "$odata" in value) {
    return odata(value.$odata.strings, ...value.$odata.values);
  }
  return value;
}

async function call({ group, method, has, args = [] }) {
  const target = group === undefined ? service : service.group(group);
  if (has !== undefined) {
    return typeof target[has] === "function";
  }
  if (typeof target[method] !== "function") {
    throw new TypeError(`no such method: ${method}`);
  }
  const result = await target[method](...args);
  if (result && typeof result.byPage === "function") {
    const pages = [];
    for await (const page of result.byPage()) {
      pages.push([...page]);
    }
    return pages;
  }
  return result ?? null;
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  let reply;
  try {
    reply = { ok: true, result: await call(JSON.parse(line, revive)) };
  } catch (error) {
    const { name, message, statusCode, code } = error;
    reply = { ok: false, error: { name, message, statusCode, code } };
  }
  console.log(JSON.stringify(reply));
}
