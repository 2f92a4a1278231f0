'use strict';
// Peer for the ticker benchmark: Node's `ws` library with a topic map (topic -> Set of sockets), the
// pub/sub server users write on top of ws.
//
//     node benches/peers/ws_topics.js        (after `npm ci` in benches/peers)
//
// Listens on 127.0.0.1 on a free port and prints `Endpoint=http://127.0.0.1:PORT;` like the other peers.
// A client names its topics in the upgrade URL, `/?topics=a,b,c`, and any client publishes with a text
// message `{"topic": "...", "data": "..."}`. Each publication is encoded once, in the envelope fastpush
// gives a json.webpubsub.azure.v1 group message, and sent to every open member of the topic. Compression
// is off; stdin EOF stops the server. Slow members are not limited: ws buffers for them in memory.
const { WebSocket, WebSocketServer } = require('ws');

const MAX_TOPICS_PER_CLIENT = 1000;
const MAX_TOPIC_LENGTH = 1024;

const topics = new Map();

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  backlog: 4096,
  perMessageDeflate: false,
  maxPayload: 65536,
});

function validTopic(topic) {
  return typeof topic === 'string' && topic.length > 0 && topic.length <= MAX_TOPIC_LENGTH;
}

function publish(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return;
  }
  if (message === null || !validTopic(message.topic) || typeof message.data !== 'string') return;
  const members = topics.get(message.topic);
  if (members === undefined) return;
  const frame = Buffer.from(JSON.stringify({
    type: 'message', from: 'group', group: message.topic, dataType: 'text', data: message.data,
  }));
  for (const ws of members) {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame, { binary: false });
  }
}

wss.on('connection', (ws, request) => {
  const wanted = new URL(request.url, 'http://peer').searchParams.get('topics') || '';
  const joined = [...new Set(wanted.split(',').filter(validTopic))].slice(0, MAX_TOPICS_PER_CLIENT);
  for (const topic of joined) {
    let members = topics.get(topic);
    if (members === undefined) topics.set(topic, (members = new Set()));
    members.add(ws);
  }
  ws.on('message', (data, isBinary) => {
    if (!isBinary) publish(data.toString());
  });
  ws.on('close', () => {
    for (const topic of joined) {
      const members = topics.get(topic);
      members.delete(ws);
      if (members.size === 0) topics.delete(topic);
    }
  });
});

wss.on('listening', () => {
  process.stdout.write(`Endpoint=http://127.0.0.1:${wss.address().port};\n`);
});

process.stdin.resume();
process.stdin.on('end', () => {
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
});
