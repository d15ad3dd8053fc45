"""`pouw-operator`: runs the kopf operator for PoUWNode, MLTask and Stake resources.

    pouw-operator                      every namespace
    pouw-operator -n pouw [-n other]   only these namespaces

Settings come from POUW_* variables (settings.py); a bad one stops the start with one line
and exit status 2. Metrics are served on POUW_OPERATOR_METRICS_PORT, kopf's liveness probe on
POUW_OPERATOR_LIVENESS_PORT (/healthz). What the handlers use (settings, metrics, the
Kubernetes client) is built here and handed to kopf as its memo (memo.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import kopf

from pouw_operator.memo import OperatorMemo
from pouw_operator.settings import OperatorSettings, SettingsError

HANDLER_MODULES = (
    "pouw_operator.handlers.pouwnode",
    "pouw_operator.handlers.mltask",
    "pouw_operator.handlers.stake",
)
"""Importing a module registers its handlers with kopf's default registry; every one must be
there."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pouw-operator",
        description="Runs the PoUW operator: PoUWNode, MLTask and Stake resources.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=[],
        metavar="NAMESPACE",
        help="watch this namespace (repeat for more); default: all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    return parser.parse_args(argv)


def import_handlers(modules: Sequence[str] = HANDLER_MODULES) -> list[str]:
    """Import the handler modules; returns their names. A missing one is an ImportError
    naming it: an operator without one of its handlers must not start."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            raise ImportError(f"no handler module {name}", name=name) from None
    return list(modules)


def _post_only_problems_as_events(settings: kopf.OperatorSettings, **_: object) -> None:
    """Kubernetes Events for warnings and errors only: a success per handler per resource
    would double the operator's API writes and bury the events that matter."""
    settings.posting.level = logging.WARNING


def _watch_only_the_given_namespaces(settings: kopf.OperatorSettings, **_: object) -> None:
    """With namespaces named there is nothing to discover: no cluster-wide list and watch of
    namespaces and CRDs (so a namespaced Role is enough). The CRDs must exist at start."""
    settings.scanning.disabled = True


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as error:
        sys.stderr.write(f"pouw-operator: {error}\n")
        sys.exit(2)
    memo = OperatorMemo.create(settings)
    import_handlers()
    kopf.configure(debug=settings.log_level == "DEBUG", quiet=settings.log_level == "ERROR")
    logging.getLogger().setLevel(settings.log_level)
    memo.metrics.serve(settings.metrics_port)
    namespaces: list[str] = args.namespaces
    kopf.on.startup()(_post_only_problems_as_events)
    if namespaces:
        kopf.on.startup()(_watch_only_the_given_namespaces)
    kopf.run(
        standalone=True,  # one replica; no KopfPeering resources to install
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=(
            f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
        ),
        memo=memo,
    )
