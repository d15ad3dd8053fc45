"""PoUW node: a Proof-of-Useful-Work blockchain node that needs no Kubernetes."""
