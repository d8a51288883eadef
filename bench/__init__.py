"""Conduit's benchmarks (not tests): ``python -m bench [name] [options]``; figures go to docs/benchmarks.md.

Every public module here that defines ``main(argv) -> int`` is a bench the
dispatcher in ``__main__`` finds by itself; helpers are private (``_name.py``).
"""
