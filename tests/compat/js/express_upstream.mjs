// An application server built with the official @azure/web-pubsub-express middleware, unchanged
// API use: node express_upstream.mjs <hub>. Prints one JSON line per event it sees, and first
// {"listening": port}. Events named invoke-* answer invocations (tests/compat/test_js_client_invoke.py):
// invoke-echo echoes as JSON, invoke-refuse fails with 400, invoke-hang never answers (a plain
// express middleware in front says when its request is abandoned, with its ce-invocationId).
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const hub = process.argv[2];
const log = (line) => console.log(JSON.stringify(line));

const handler = new WebPubSubEventHandler(hub, {
  handleConnect: (req, res) => {
    log({ event: "connect", connectionId: req.context.connectionId, claims: req.claims, queries: req.queries,
          subprotocols: req.subprotocols });
    if (req.queries?.reject) {
      res.fail(401, "rejected by the express app");
      return;
    }
    res.setState("visits", 1);
    res.success({ userId: "express-user", groups: ["express-group"], roles: ["webpubsub.sendToGroup.express-group"] });
  },
  onConnected: (req) => log({ event: "connected", connectionId: req.context.connectionId, userId: req.context.userId }),
  onDisconnected: (req) => log({ event: "disconnected", connectionId: req.context.connectionId, reason: req.reason }),
  handleUserEvent: (req, res) => {
    const name = req.context.eventName;
    if (name.startsWith("invoke-")) {
      answerInvocation(name, req, res);
      return;
    }
    log({ event: "user", name: req.context.eventName, data: String(req.data), dataType: req.dataType,
          state: req.context.states });
    res.setState("visits", (req.context.states.visits ?? 0) + 1);
    res.success(`echo:${req.data}`, "text");
  },
});

function answerInvocation(name, req, res) {
  const data = req.dataType === "binary" ? Buffer.from(req.data).toString("base64") : req.data;
  log({ event: "invoke", name, data, dataType: req.dataType });
  if (name === "invoke-echo") {
    res.success(JSON.stringify({ echo: data, dataType: req.dataType, user: req.context.userId }), "json");
  } else if (name === "invoke-refuse") {
    res.fail(400, `no such order: ${data}`);
  } else if (name !== "invoke-hang") {
    res.fail(500, "unknown invocation");
  }
}

const app = express();
app.use((req, res, next) => {
  if (req.headers["ce-eventname"] === "invoke-hang") {
    res.on("close", () => log({ event: "abandoned", invocationId: req.headers["ce-invocationid"],
                                answered: res.writableFinished }));
  }
  next();
});
app.use(handler.getMiddleware());
const server = app.listen(0, "127.0.0.1", () => log({ listening: server.address().port, path: handler.path }));
