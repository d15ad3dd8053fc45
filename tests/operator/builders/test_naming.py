"""Names, labels, selectors and pod addresses of a PoUWNode's children."""

from __future__ import annotations

import pytest

from pouw_operator.builders.naming import label_selector, labels, node_api_url
from pouw_operator.settings import OperatorSettings


def test_labels_and_the_scale_selector() -> None:
    assert labels("miner", "miner") == {
        "app.kubernetes.io/name": "pouw-node",
        "app.kubernetes.io/instance": "miner",
        "app.kubernetes.io/managed-by": "pouw-operator",
        "pouw.network/role": "miner",
    }
    assert label_selector("miner") == (
        "app.kubernetes.io/instance=miner,app.kubernetes.io/name=pouw-node"
    )


@pytest.mark.parametrize(
    ("settings", "ordinal", "url"),
    [
        (OperatorSettings(), None, "http://miner-0.miner.net.svc:8080"),
        (OperatorSettings(), 2, "http://miner-2.miner.net.svc:8080"),
        (OperatorSettings(node_url="http://127.0.0.1:9999"), None, "http://127.0.0.1:9999"),
    ],
    ids=["pod-zero", "another-pod", "one-url-for-every-node"],
)
def test_the_node_api_url_is_pod_zero_unless_the_settings_name_one(
    settings: OperatorSettings, ordinal: int | None, url: str
) -> None:
    if ordinal is None:
        assert node_api_url(settings, "net", "miner") == url
    else:
        assert node_api_url(settings, "net", "miner", ordinal) == url
