"""Tests of what two or more deployables share (shared/): tokens, refresh, crypto, tenants, Redis topologies."""
