"""`python -m deploy realtime`: a realtime (or serverless) endpoint, smoke-tested, timed, torn down."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from .autoscaling import bounds, default_target_invocations, scale_realtime
from .instances import is_gpu_instance
from .options import model_options, smoke_image_options, usage_error
from .sagemaker_model import (
    RAY_GPU_AMI,
    build_model,
    deploy_or_clean_up,
    keep_or_delete,
    sagemaker_session,
    scaling_clients,
)


def register(commands) -> None:
    command = commands.add_parser("realtime", help="deploy an endpoint, smoke-test it, time requests, tear it down")
    model_options(command)
    smoke_image_options(command)
    command.add_argument("--requests", type=int, default=0, help="time this many requests (FPS, seconds per frame)")
    command.add_argument("--serverless", type=int, metavar="MEMORY_MB", choices=(1024, 2048, 3072, 4096, 5120, 6144),
                         help="a serverless endpoint with this much memory instead (CPU only; 4 MB payloads, 60 s)")
    command.add_argument("--max-concurrency", type=int, default=5, help="serverless: concurrent invocations (default 5)")
    command.add_argument("--autoscale", type=bounds, metavar="MIN:MAX",
                         help="scale the instances between MIN (>= 1) and MAX with the invocations (target tracking)")
    command.add_argument("--target-invocations", type=int, metavar="N",
                         help="--autoscale's target: invocations per instance per minute (default: derived from the "
                              "CPU instance's vCPUs, docs/deploy.md#autoscaling; required on GPU instances)")
    command.set_defaults(run=realtime)


def smoke_test(predictor_runtime, endpoint: str, bucket: str, key: str) -> None:
    for content_type, body in (("text/csv", f"{bucket}/{key}"),
                               ("application/json", json.dumps({"bucket": bucket, "key": key}))):
        response = predictor_runtime.invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body)
        payload = response["Body"].read().decode()
        print(f"smoke test {content_type}: {payload[:300]}")


def timing_loop(runtime, endpoint: str, bucket: str, key: str, count: int) -> dict:
    body = json.dumps({"bucket": bucket, "key": key})
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Body=body)["Body"].read()
        latencies.append(time.perf_counter() - start)
        print(f"request {i + 1}: {latencies[-1] * 1000:.1f} ms")
    total = sum(latencies)
    summary = {"requests": count, "p50_ms": 1000 * float(np.percentile(latencies, 50)),
               "p95_ms": 1000 * float(np.percentile(latencies, 95)), "fps": count / total,
               "seconds_per_frame": total / count}
    print(json.dumps(summary))
    return summary


def autoscaling_target(args) -> int | None:
    """--autoscale's target invocations per instance per minute, its options checked before anything is created."""
    if not args.autoscale:
        if args.target_invocations:
            raise usage_error("--target-invocations goes with --autoscale MIN:MAX")
        return None
    if args.serverless:
        raise usage_error("--autoscale: a serverless endpoint scales by itself (--max-concurrency)")
    if args.autoscale.low < 1:
        raise usage_error("--autoscale: a realtime endpoint keeps at least one instance (MIN >= 1; `async` scales to 0)")
    if not args.autoscale.low <= args.instance_count <= args.autoscale.high:
        raise usage_error(f"--instance-count {args.instance_count} is outside --autoscale "
                         f"{args.autoscale.low}:{args.autoscale.high}")
    try:
        return args.target_invocations or default_target_invocations(args.instance_type)
    except ValueError as error:
        raise usage_error(f"--autoscale: {error}") from None


def realtime(args) -> int:
    """A realtime endpoint (or, with --serverless MEMORY_MB, a serverless one): smoke test, timing, teardown."""
    from sagemaker.serverless import ServerlessInferenceConfig

    target = autoscaling_target(args)
    session = sagemaker_session(args)
    model, name = build_model(args, session)
    if args.serverless:
        deploy_or_clean_up(session, model, name, serverless_inference_config=ServerlessInferenceConfig(
            memory_size_in_mb=args.serverless, max_concurrency=args.max_concurrency))
    else:
        gpu_ray = args.server == "ray" and is_gpu_instance(args.instance_type)
        deploy_or_clean_up(session, model, name, initial_instance_count=args.instance_count,
                           instance_type=args.instance_type, inference_ami_version=RAY_GPU_AMI if gpu_ray else None)
    print(f"endpoint {name} is InService", file=sys.stderr)
    try:
        if args.autoscale:
            scale_realtime(scaling_clients(session)[0], name, args.autoscale, target)
        runtime = session.sagemaker_runtime_client
        smoke_test(runtime, name, args.bucket, args.key)
        if args.requests:
            timing_loop(runtime, name, args.bucket, args.key, args.requests)
    finally:
        keep_or_delete(session, name, args.keep)
    print(name)
    return 0
