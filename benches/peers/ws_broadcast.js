'use strict';
// Peer (b): Node's `ws` library broadcasting over `wss.clients`, as its README shows.
//
//     node benches/peers/ws_broadcast.js        (after `npm ci` in benches/peers)
//
// Same contract as the Python peers (benches/peers/__init__.py): 127.0.0.1 on a free port, prints
// `Endpoint=http://127.0.0.1:PORT;`, json.webpubsub.azure.v1 subscribers get the `connected` message and
// the envelope, every stdin line is one broadcast, EOF stops it. Compression is off; each variant is
// encoded to a Buffer once per broadcast.
const { WebSocket, WebSocketServer } = require('ws');

const JSON_SUBPROTOCOL = 'json.webpubsub.azure.v1';
const CONNECTED = JSON.stringify({ type: 'system', event: 'connected', connectionId: 'peer' });

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  backlog: 4096,
  perMessageDeflate: false,
  maxPayload: 65536,
  handleProtocols: (offered) => (offered.has(JSON_SUBPROTOCOL) ? JSON_SUBPROTOCOL : false),
});

wss.on('connection', (ws) => {
  if (ws.protocol === JSON_SUBPROTOCOL) ws.send(CONNECTED);
});

wss.on('listening', () => {
  process.stdout.write(`Endpoint=http://127.0.0.1:${wss.address().port};\n`);
});

function broadcast(text) {
  const raw = Buffer.from(text);
  const wrapped = Buffer.from(JSON.stringify({ type: 'message', from: 'server', dataType: 'text', data: text }));
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(client.protocol === JSON_SUBPROTOCOL ? wrapped : raw, { binary: false });
    }
  }
}

let tail = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  const lines = (tail + chunk).split('\n');
  tail = lines.pop();
  for (const line of lines) broadcast(line);
});
process.stdin.on('end', () => {
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
});
