"""Kubernetes operator for PoUW networks (kopf)."""
