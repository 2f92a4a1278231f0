"""Broadcast servers fastpush is compared with (`python -m benches.fanout --peers`).

Each listens on 127.0.0.1 with a free port, prints `Endpoint=http://127.0.0.1:PORT;` like
`fastpush serve`, accepts any path, sends the json.webpubsub.azure.v1 envelope to subscribers that ask
for that subprotocol (raw text to the others), and broadcasts each stdin line (benches/stdin_lines.py).
"""
