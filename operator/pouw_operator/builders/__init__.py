"""Pure builders, one module per child kind: a NodeResource and the operator's settings in,
Kubernetes manifests (dicts) out.

No I/O here: the PoUWNode handlers read the cluster, call these and apply the result; the tests
render them without a cluster. Randomness (new keys) comes in as a parameter.
"""
