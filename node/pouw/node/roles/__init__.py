"""The roles a node plays, each a plug-in that subscribes to the node's events (events.py):
miner, verifier, evaluator, screening (for a task's supervisors, verifiers and evaluator) and
supervisor (the IT_RES journal). The composition root (node.py) decides which a node runs;
no role imports another (import-linter keeps them independent)."""
