"""The reliability suite: every fault of shared/spec/faults.md against the real daemon.

See docs/reliability.md for the guarantees, the item -> test map and the sizes run in CI.
"""
