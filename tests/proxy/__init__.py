"""The auth proxy's tests: its HTTP transport, forwarding, TLS, splice, Redis faults."""
