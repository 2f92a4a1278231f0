"""The live dashboard at /dashboard: access (login tokens, sessions), the overview, the hub view,
the Live Trace and the test client; the page itself is in static/, shipped as package data."""
