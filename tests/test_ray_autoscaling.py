"""The Ray Serve app's replicas: config.yaml's autoscaling_config, its "auto" counts resolved per instance."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO

pytestmark = pytest.mark.ray

ray_app = pytest.importorskip("ray_app", reason="Ray Serve is not installed in this venv")


def archive_config_args() -> dict:
    """The `args` of config.yaml as the archive carries it."""
    config = yaml.safe_load((REPO / "deploy" / "ray_config.yaml").read_text())
    (application,) = config["applications"]
    assert application["import_path"] == "ray_app:build"
    return application["args"]


def deployment_autoscaling(args: dict):
    return ray_app.build(args)._bound_deployment._deployment_config.autoscaling_config


def test_the_archive_config_scales_between_one_and_every_replica_the_instance_holds(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "4")
    autoscaling = deployment_autoscaling(archive_config_args())
    assert (autoscaling.min_replicas, autoscaling.initial_replicas, autoscaling.max_replicas) == (1, 4, 4)
    assert autoscaling.target_ongoing_requests == 2
    assert autoscaling.downscale_delay_s > autoscaling.upscale_delay_s  # scale in slower than out


def test_explicit_counts_are_kept_for_a_multi_node_cluster(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "2")
    autoscaling = deployment_autoscaling({"autoscaling_config": {"min_replicas": 2, "max_replicas": 16,
                                                                 "target_ongoing_requests": 4}})
    assert (autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.target_ongoing_requests) == (2, 16, 4)


@pytest.mark.parametrize("configured, words", [
    ({"max_replica": 2}, "unknown fields ['max_replica']"),
    ({"min_replicas": 5, "max_replicas": 2}, "must be greater than or equal to min_replicas"),
    ({"max_replicas": "many"}, "valid integer"),
])
def test_a_wrong_autoscaling_config_is_one_clear_error_at_start(configured, words):
    with pytest.raises(ValueError, match="config.yaml args.autoscaling_config") as error:
        ray_app.build({"autoscaling_config": configured})
    assert words in str(error.value) and "\n" not in str(error.value)
