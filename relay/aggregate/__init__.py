"""Aggregation: windows, cells and the histogram layout they publish."""
