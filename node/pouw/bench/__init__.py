"""Benchmarks behind `pouw bench NAME`: each measures its baseline in the same process and
reports ratios, so figures compare across machines."""
