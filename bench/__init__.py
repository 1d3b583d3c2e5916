"""Benchmarks (quality on real labeled data, scoring speed); not tests."""
