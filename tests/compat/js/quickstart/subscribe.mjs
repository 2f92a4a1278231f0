// The JavaScript subscriber from the "Push messages from server" quickstart. The one change:
// the Client Access URL is the first command-line argument instead of a literal pasted from the portal.
import { WebPubSubClient } from "@azure/web-pubsub-client";

// Instantiates the client object
// <client-access-url> is copied from Azure portal mentioned above
const client = new WebPubSubClient(process.argv[2])

// Registers a handler for the "server-message" event
client.on("server-message", (e) => {
    console.log(`Received message ${e.message.data}`)
});

// Before a client can receive a message,
// you must invoke start() on the client object.
await client.start();
