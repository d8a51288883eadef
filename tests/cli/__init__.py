"""The `conduit` operator command (conduit/), as an operator runs it."""
