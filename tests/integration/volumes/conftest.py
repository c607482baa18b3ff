"""Volume tests use the engine tests' fixtures: an engine in the test's own roots, busybox imported."""

from __future__ import annotations

import pytest

from tests.integration.engine.conftest import busybox_tar, pallet  # noqa: F401

pytestmark = pytest.mark.root
