"""The demo and its scaffolding: recorded feeds, a loopback feed server, seeded history.

Nothing in the product imports this package; the demo, tests and benchmarks do.
"""
