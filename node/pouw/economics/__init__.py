"""Economics: roles, stake and rewards (the seed API imports NodeRole from here)."""

from pouw.roles import NodeRole

__all__ = ["NodeRole"]
