"""Prometheus metrics: `counters` (plain numbers the server keeps as it works, no dependency),
`collector` (reads them, the fan-out's C counters and the hubs when /metrics is scraped, with
prometheus_client) and `endpoint` (who may scrape: the access key on the public port, anyone on
the separate metrics listener)."""
