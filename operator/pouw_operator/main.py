"""`pouw-operator`: runs the kopf operator for PoUWNode, MLTask and Stake resources."""

from __future__ import annotations

import sys


def main() -> None:
    sys.stderr.write(
        "pouw-operator: the kopf handlers for PoUWNode, MLTask and Stake are not built yet "
        "(see the Step 4 issue); nothing to run.\n"
    )
    sys.exit(2)
