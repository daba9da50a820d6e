"""Shared fixtures of the tests and the benchmarks: real components, started and driven.

Redis servers and a Cluster (:mod:`testkit.redis_servers`), the exchange and
whale simulator harness (:mod:`testkit.simulator`), the daemon in process and as
a process (:mod:`testkit.daemon`, :mod:`testkit.process`, :mod:`testkit.replicas`),
small model artifacts (:mod:`testkit.models`), the fault runs' invariant
(:mod:`testkit.faults`) and the one polling helper (:mod:`testkit.polling`).
``tests/`` and ``benchmarks/`` import it; nothing of the product does.
"""
