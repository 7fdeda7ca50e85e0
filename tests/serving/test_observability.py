"""Readiness flags and the metrics registry choice."""
from __future__ import annotations

import os

import pytest

from shared.serving import observability


def test_ready_needs_loaded_and_warmed_up_and_not_draining():
    health = observability.Health()
    assert not health.ready
    health.mark_loaded()
    assert not health.ready  # loaded but no warm-up inference yet
    health.mark_warmed_up()
    assert health.ready
    health.start_draining()
    assert not health.ready and health.status()["draining"] is True


def test_a_load_error_is_reported_in_the_status():
    health = observability.Health()
    health.mark_failed("ArtifactError: manifest.json is missing")
    assert health.status() == {"ready": False, "loaded": False, "warmed_up": False, "draining": False,
                               "error": "ArtifactError: manifest.json is missing"}


@pytest.mark.skipif("PROMETHEUS_MULTIPROC_DIR" in os.environ, reason="this pytest runs in multi-process mode")
def test_single_process_registry_without_a_multiprocess_dir():
    assert observability.metrics_registry() is observability.REGISTRY
