"""Benchmarks of gftlib's training step, GFT overhead, OT coupling and sampling against torchcfm.

Run with ``make bench`` (``python -m benchmarks.run --device auto``); see benchmarks/README.md.
"""
