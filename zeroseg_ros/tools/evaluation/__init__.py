"""Benchmark evaluation of the segmenter with the training-free papers' protocol (``zeroseg eval``).

``datasets`` reads the benchmarks, ``presets`` holds each method's protocol, ``metrics`` turns a confusion
matrix into mIoU, ``runner`` drives the project's ``Segmenter`` over a dataset (resumable) and ``report``
writes the results beside the published numbers. See docs/evaluation.md.
"""
