// An application server built with the official @azure/web-pubsub-express middleware, unchanged
// API use: node express_upstream.mjs <hub> [package]. Prints one JSON line per event it sees, and
// first {"listening": port}. `package` is the middleware's installed name (default
// @azure/web-pubsub-express; @azure/web-pubsub-express-1.1.0 handles group presence events).
import express from "express";

const hub = process.argv[2];
const { WebPubSubEventHandler } = await import(process.argv[3] ?? "@azure/web-pubsub-express");
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
  onGroupJoined: (req) => log({ event: "groupJoined", group: req.group, connectionId: req.context.connectionId,
                                userId: req.context.userId, eventName: req.context.eventName, state: req.context.states }),
  onGroupLeft: (req) => log({ event: "groupLeft", group: req.group, connectionId: req.context.connectionId,
                              userId: req.context.userId, eventName: req.context.eventName }),
  handleUserEvent: (req, res) => {
    log({ event: "user", name: req.context.eventName, data: String(req.data), dataType: req.dataType,
          state: req.context.states });
    res.setState("visits", (req.context.states.visits ?? 0) + 1);
    res.success(`echo:${req.data}`, "text");
  },
});

const app = express();
app.use(handler.getMiddleware());
const server = app.listen(0, "127.0.0.1", () => log({ listening: server.address().port, path: handler.path }));
