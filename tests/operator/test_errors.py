"""The operator's errors have one root, so a caller can tell them from a bug."""

from __future__ import annotations

import pytest

from pouw_operator.directory import NoNode
from pouw_operator.errors import OperatorError
from pouw_operator.kube import KubeError
from pouw_operator.payments import Refused
from pouw_operator.settings import OperatorSettings, SettingsError
from pouw_operator.task_status import SpecError, submission


@pytest.mark.parametrize("error", [NoNode, KubeError, Refused, SettingsError, SpecError])
def test_every_error_of_the_operator_is_an_operator_error(error: type[Exception]) -> None:
    assert issubclass(error, OperatorError)


def test_a_bad_setting_and_a_bad_spec_are_caught_by_the_root() -> None:
    with pytest.raises(OperatorError, match="POUW_OPERATOR_POLL_SECONDS"):
        OperatorSettings.from_env({"POUW_OPERATOR_POLL_SECONDS": "never"})
    with pytest.raises(OperatorError, match="needs a reward"):
        submission({"model": {"layers": [4, 3]}}, "uid")
