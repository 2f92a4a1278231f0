// A subscriber in the style of the GitHub sample (samples/javascript/pubsub): the server SDK
// makes the Client Access URL locally and a plain `ws` socket, with no subprotocol, prints every frame.
const WebSocket = require("ws");
const { WebPubSubServiceClient } = require("@azure/web-pubsub");

async function main() {
  const serviceClient = new WebPubSubServiceClient(process.env.WebPubSubConnectionString, "myHub1");
  const token = await serviceClient.getClientAccessToken();
  const ws = new WebSocket(token.url);
  ws.on("open", () => console.log("connected"));
  ws.on("message", (data) => console.log("Message received: %s", data));
}

main();
