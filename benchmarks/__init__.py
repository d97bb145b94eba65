"""Benchmarks of repfuse and the references it is compared with."""
