"""Prometheus metrics and health of a node."""
