"""Kubernetes: the only package that knows API JSON.

credentials (the only user of the `kubernetes` package) → api (aiohttp) → watch
(list-then-watch, forever) → objects (API JSON → our records) → cluster (one cluster as a
registry source) → fleet (every cluster, remote Secrets, readiness).
"""
