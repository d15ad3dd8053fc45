"""The root of the operator's errors: settings it cannot run with, Kubernetes API failures,
payments a node refuses or no node can make, specs no body can be built from."""

from __future__ import annotations


class OperatorError(Exception):
    pass
