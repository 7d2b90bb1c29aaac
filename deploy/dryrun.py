"""--dry-run: print every AWS API request instead of sending it, answering with plausible responses."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody

ACCOUNT = "000000000000"


def _response(operation: str, params: dict, region: str) -> dict:
    now = datetime.now(UTC)
    arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}"
    name = params.get("EndpointName") or params.get("ModelName") or params.get("TransformJobName") or "dry-run"
    canned = {
        "CreateModel": {"ModelArn": f"{arn}:model/{name}"},
        "CreateEndpointConfig": {"EndpointConfigArn": f"{arn}:endpoint-config/{params.get('EndpointConfigName')}"},
        "CreateEndpoint": {"EndpointArn": f"{arn}:endpoint/{name}"},
        "DescribeEndpoint": {"EndpointName": name, "EndpointArn": f"{arn}:endpoint/{name}",
                             "EndpointConfigName": name, "EndpointStatus": "InService",
                             "CreationTime": now, "LastModifiedTime": now},
        "DescribeEndpointConfig": {"EndpointConfigName": params.get("EndpointConfigName", name),
                                   "EndpointConfigArn": f"{arn}:endpoint-config/{name}",
                                   "ProductionVariants": [], "CreationTime": now},
        "CreateTransformJob": {"TransformJobArn": f"{arn}:transform-job/{name}"},
        "DescribeTransformJob": {"TransformJobName": name, "TransformJobArn": f"{arn}:transform-job/{name}",
                                 "TransformJobStatus": "Completed", "ModelName": params.get("ModelName", name),
                                 "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://dry-run/"}}},
                                 "TransformOutput": {"S3OutputPath": "s3://dry-run/"},
                                 "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
                                 "CreationTime": now},
        "InvokeEndpoint": {"ContentType": "application/json",
                           "Body": StreamingBody(io.BytesIO(b'{"dry_run": true}'), len(b'{"dry_run": true}'))},
        "ListObjectsV2": {"Contents": [], "KeyCount": 0, "IsTruncated": False},
        "InvokeEndpointAsync": {"InferenceId": "dry-run", "OutputLocation": "s3://dry-run/answers/dry-run.out"},
        "PutScalingPolicy": {"PolicyARN": f"arn:aws:autoscaling:{region}:{ACCOUNT}:scalingPolicy:dry-run:"
                                          f"resource/sagemaker/{params.get('ResourceId')}:"
                                          f"policyName/{params.get('PolicyName')}", "Alarms": []},
        "DescribeScalingPolicies": {"ScalingPolicies": []},
        "DescribeScalableTargets": {"ScalableTargets": []},
        "DescribeAlarms": {"MetricAlarms": []},
        "GetObject": {"Body": StreamingBody(io.BytesIO(b'{"dry_run": true}'), len(b'{"dry_run": true}'))},
    }
    return canned.get(operation, {})


def _printable(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "Body"}, default=str, sort_keys=True)


def dry_run_session(region: str) -> boto3.session.Session:
    """A boto3 session whose clients print each request and answer it locally."""
    session = boto3.session.Session(region_name=region, aws_access_key_id="dry-run", aws_secret_access_key="dry-run")

    def remember(params, model, context, **_):
        context["dry_run_params"] = dict(params)

    def intercept(model, context, **_):
        params = context.get("dry_run_params", {})
        print(f"DRY-RUN {model.service_model.service_name}.{model.name} {_printable(params)}", flush=True)
        return AWSResponse("https://dry-run", 200, {}, None), _response(model.name, params, region)

    session.events.register("before-parameter-build.*.*", remember)
    session.events.register("before-call.*.*", intercept)
    return session
