"""Sessions deepcvr starts get its defaults unless the settings say otherwise."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.spark


def test_started_session_has_deepcvr_defaults(spark: Any) -> None:
    from deepcvr.transform.spark_runtime import SESSION_DEFAULTS

    for key, value in SESSION_DEFAULTS.items():
        assert spark.conf.get(key) == value
    # The Python call sites of Column operations are not sent to the JVM (no round trips).
    from pyspark.errors.utils import is_debugging_enabled

    assert not is_debugging_enabled()
