"""The bottom layer: vocabulary and small helpers every other package shares.

Nothing here imports from the rest of relay (tests/test_layers.py holds every package to its
layer), so any package may import from here without creating a cycle.
"""
