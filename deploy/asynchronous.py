"""`python -m deploy async`: an asynchronous endpoint, smoke-tested through S3, torn down."""

from __future__ import annotations

import json
import os
import sys
import time

from request_handling.bodies import split_s3_uri

from .autoscaling import bounds, scale_async
from .options import model_options, smoke_image_options, usage_error
from .sagemaker_model import (
    build_model,
    deploy_or_clean_up,
    keep_or_delete,
    large_request_environment,
    sagemaker_session,
    scaling_clients,
)

ASYNC_PAYLOAD_BYTES = 1024**3  # an asynchronous request body may be up to 1 GB
ASYNC_TIMEOUT = 3600  # seconds SageMaker gives an asynchronous invocation


def register(commands) -> None:
    command = commands.add_parser("async", help="deploy an asynchronous endpoint, smoke-test it, tear it down")
    model_options(command)
    command.add_argument("--output", required=True, help="s3:// prefix where SageMaker writes the answers")
    command.add_argument("--success-topic", help="SNS topic ARN told of each answer")
    command.add_argument("--error-topic", help="SNS topic ARN told of each failure")
    command.add_argument("--max-concurrency", type=int, default=4, help="invocations in flight per instance (default 4)")
    command.add_argument("--autoscale", type=bounds, metavar="MIN:MAX",
                         help="scale the instances between MIN (0: none while idle) and MAX with the backlog")
    command.add_argument("--target-backlog", type=float, metavar="N",
                         help="--autoscale's target: queued requests per instance (default: --max-concurrency)")
    smoke_image_options(command)
    command.set_defaults(run=asynchronous)


def asynchronous(args) -> int:
    """An asynchronous endpoint: requests (up to 1 GB, JSON Lines of many S3 references too) are read from S3
    and answers written to --output; a smoke request goes through it before any teardown."""
    from sagemaker.async_inference import AsyncInferenceConfig

    if args.autoscale and not max(1, args.autoscale.low) <= args.instance_count <= args.autoscale.high:
        raise usage_error(f"--instance-count {args.instance_count} is outside --autoscale "
                         f"{args.autoscale.low}:{args.autoscale.high} (an endpoint starts with at least one)")
    session = sagemaker_session(args)
    model, name = build_model(args, session, large_request_environment(args, ASYNC_PAYLOAD_BYTES, ASYNC_TIMEOUT))
    notifications = {key: topic for key, topic in (("SuccessTopic", args.success_topic),
                                                   ("ErrorTopic", args.error_topic)) if topic}
    config = AsyncInferenceConfig(output_path=args.output, failure_path=f"{args.output.rstrip('/')}/failures/",
                                  max_concurrent_invocations_per_instance=args.max_concurrency,
                                  notification_config=notifications or None)
    deploy_or_clean_up(session, model, name, initial_instance_count=args.instance_count,
                       instance_type=args.instance_type, async_inference_config=config)
    print(f"endpoint {name} is InService (asynchronous)", file=sys.stderr)
    try:
        if args.autoscale:
            scale_async(*scaling_clients(session), name, args.autoscale, args.target_backlog or args.max_concurrency)
        smoke_test_async(session, name, args.output, args.bucket, args.key)
    finally:
        keep_or_delete(session, name, args.keep)
    print(name)
    return 0


def smoke_test_async(session, endpoint: str, output: str, bucket: str, key: str, timeout: float = 600) -> None:
    """Upload one JSON request beside the output, invoke, and print the answer SageMaker writes."""
    s3 = session.boto_session.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))
    out_bucket, prefix = split_s3_uri(output)
    request_key = f"{prefix.rstrip('/')}/smoke-requests/{endpoint}.json".lstrip("/")
    s3.put_object(Bucket=out_bucket, Key=request_key, Body=json.dumps({"bucket": bucket, "key": key}).encode())
    answer = session.sagemaker_runtime_client.invoke_endpoint_async(
        EndpointName=endpoint, InputLocation=f"s3://{out_bucket}/{request_key}", ContentType="application/json")
    location = answer["OutputLocation"]
    print(f"smoke test: answer will be at {location}", file=sys.stderr)
    answer_bucket, answer_key = split_s3_uri(location)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = s3.get_object(Bucket=answer_bucket, Key=answer_key)["Body"].read().decode()
        except s3.exceptions.NoSuchKey:
            time.sleep(5)
            continue
        print(f"smoke test application/json (async): {body[:300]}")
        return
    raise TimeoutError(f"no answer at {location} within {timeout:.0f} s")
