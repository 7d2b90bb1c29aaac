"""Application Auto Scaling for an endpoint's variant: target tracking on invocations (realtime) or on the backlog
(asynchronous, down to zero instances, woken by a CloudWatch alarm), and their removal before the endpoint goes.

AWS's documented patterns: https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling.html and
https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NamedTuple

from .instances import instance_vcpus, is_gpu_instance

VARIANT = "AllTraffic"  # the variant the SageMaker SDK's deploy() creates
NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"

# The default realtime target, per AWS's guidance: the invocations one instance sustains per minute times a safety
# factor of 0.5. What one instance sustains: single-image requests at the images/s that `make bench`'s served-endpoint
# rows give per vCPU, times the instance's vCPUs (docs/deploy.md#autoscaling shows the arithmetic).
IMAGES_PER_SECOND_PER_VCPU = 8.0
SAFETY_FACTOR = 0.5
REALTIME_COOLDOWNS = {"ScaleOutCooldown": 60, "ScaleInCooldown": 300}  # out fast, in slowly: no flapping
ASYNC_COOLDOWNS = {"ScaleOutCooldown": 300, "ScaleInCooldown": 600}
WAKE_COOLDOWN = 300


class Bounds(NamedTuple):
    """--autoscale MIN:MAX: the variant's instance count bounds."""

    low: int
    high: int


def bounds(text: str) -> Bounds:
    """argparse type of --autoscale: MIN:MAX, 0 ≤ MIN ≤ MAX, MAX ≥ 1."""
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match or int(match[2]) < max(1, int(match[1])):
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN:MAX instances with 0 <= MIN <= MAX and MAX >= 1")
    return Bounds(int(match[1]), int(match[2]))


def default_target_invocations(instance_type: str) -> int:
    """SageMakerVariantInvocationsPerInstance (per minute) for single-image requests on a CPU instance."""
    if is_gpu_instance(instance_type):
        raise ValueError(f"{instance_type}: no measured GPU throughput to derive a target from; "
                         "pass --target-invocations (invocations per instance per minute)")
    try:
        vcpus = instance_vcpus(instance_type)
    except ValueError as error:
        raise ValueError(f"{error}; pass --target-invocations") from None
    return math.floor(IMAGES_PER_SECOND_PER_VCPU * vcpus * 60 * SAFETY_FACTOR)


def resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def wake_alarm_name(endpoint: str) -> str:
    return f"{endpoint}-has-backlog-without-capacity"


def _register(autoscaling, endpoint: str, limits: Bounds) -> None:
    autoscaling.register_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=resource_id(endpoint),
                                         ScalableDimension=DIMENSION, MinCapacity=limits.low, MaxCapacity=limits.high)


def _put_policy(autoscaling, endpoint: str, name: str, **policy) -> str:
    return autoscaling.put_scaling_policy(PolicyName=f"{endpoint}-{name}", ServiceNamespace=NAMESPACE,
                                          ResourceId=resource_id(endpoint), ScalableDimension=DIMENSION,
                                          **policy)["PolicyARN"]


def scale_realtime(autoscaling, endpoint: str, limits: Bounds, target_invocations: int) -> None:
    """MIN..MAX instances, tracking `target_invocations` invocations per instance per minute."""
    _register(autoscaling, endpoint, limits)
    _put_policy(autoscaling, endpoint, "invocations", PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": float(target_invocations),
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                    **REALTIME_COOLDOWNS})
    print(f"autoscaling {endpoint}: {limits.low}..{limits.high} instances, target {target_invocations} "
          "invocations per instance per minute", file=sys.stderr)


def scale_async(autoscaling, cloudwatch, endpoint: str, limits: Bounds, target_backlog: float) -> None:
    """MIN..MAX instances tracking the backlog per instance; at zero instances, a request waiting wakes one up (the
    backlog metric per instance is undefined there, so a step policy on HasBacklogWithoutCapacity adds it)."""
    _register(autoscaling, endpoint, limits)
    endpoint_dimension = [{"Name": "EndpointName", "Value": endpoint}]
    _put_policy(autoscaling, endpoint, "backlog", PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": float(target_backlog),
                    "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                                                      "Namespace": "AWS/SageMaker", "Dimensions": endpoint_dimension,
                                                      "Statistic": "Average"},
                    **ASYNC_COOLDOWNS})
    wake = _put_policy(autoscaling, endpoint, "wake-from-zero", PolicyType="StepScaling",
                       StepScalingPolicyConfiguration={
                           "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
                           "Cooldown": WAKE_COOLDOWN,
                           "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]})
    cloudwatch.put_metric_alarm(
        AlarmName=wake_alarm_name(endpoint), MetricName="HasBacklogWithoutCapacity", Namespace="AWS/SageMaker",
        Dimensions=endpoint_dimension, Statistic="Average", Period=60, EvaluationPeriods=2, DatapointsToAlarm=2,
        Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
        AlarmDescription=f"requests wait for {endpoint} at zero instances: add one", AlarmActions=[wake])
    print(f"autoscaling {endpoint}: {limits.low}..{limits.high} instances, target backlog {target_backlog:g} "
          "per instance, woken from zero by a request waiting", file=sys.stderr)


def remove_scaling(autoscaling, cloudwatch, endpoint: str) -> None:
    """The variant's policies, scalable target and wake-up alarm, where there are any (before the endpoint goes).
    A role not allowed to look (it never scaled anything) is told so, and the endpoint is deleted all the same."""
    from botocore.exceptions import ClientError

    try:
        policies = autoscaling.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=resource_id(endpoint), ScalableDimension=DIMENSION)["ScalingPolicies"]
        targets = autoscaling.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[resource_id(endpoint)], ScalableDimension=DIMENSION)["ScalableTargets"]
        alarms = cloudwatch.describe_alarms(AlarmNames=[wake_alarm_name(endpoint)])["MetricAlarms"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("AccessDenied", "AccessDeniedException"):
            raise
        print(f"could not check the autoscaling of {endpoint} ({error}); deleting the endpoint", file=sys.stderr)
        return
    for policy in policies:
        autoscaling.delete_scaling_policy(PolicyName=policy["PolicyName"], ServiceNamespace=NAMESPACE,
                                          ResourceId=resource_id(endpoint), ScalableDimension=DIMENSION)
    if targets:
        autoscaling.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=resource_id(endpoint),
                                               ScalableDimension=DIMENSION)
    if alarms:
        cloudwatch.delete_alarms(AlarmNames=[wake_alarm_name(endpoint)])
    if policies or targets or alarms:
        print(f"removed autoscaling of {endpoint}", file=sys.stderr)
