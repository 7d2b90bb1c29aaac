"""`python -m deploy`: deploy model.tar.gz as a realtime, serverless or asynchronous endpoint or a Batch
Transform job, or delete one.

Built on the SageMaker Python SDK v2 (requirements/deploy.txt). --dry-run prints every API request
it would make, without calling AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import UTC, datetime

import boto3
import numpy as np

from samples import example

from .dryrun import dry_run_session

HANDLER_VARIABLES = (
    "EFFICIENTDET_COMPOUND_COEF", "EFFICIENTDET_VERSION", "EFFICIENTDET_WEIGHTS", "EFFICIENTDET_INPUT_SIZE",
    "DEFAULT_PRED_THRESHOLD", "DEFAULT_IOU_THRESHOLD", "DEFAULT_MAX_DETECTIONS", "USE_FLOAT16", "CUDA_GRAPHS",
    "DEVICE_JPEG_DECODE", "JPEG_REDUCED_DECODE", "ALLOWED_BUCKETS", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MAX_IMAGES_PER_REQUEST", "MAX_DETECTIONS_PER_REQUEST",
    "BATCH_SIZE", "REQUEST_BATCH_SIZE", "REQUEST_BATCH_WAIT_MS", "PARALLEL_BATCHES", "REQUEST_TIMEOUT",
    "S3_CONNECT_TIMEOUT", "S3_READ_TIMEOUT", "S3_MAX_ATTEMPTS", "S3_MAX_CONCURRENCY", "EFFICIENTDET_NUM_THREADS",
    "SAGEMAKER_MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_TIMEOUT", "TS_MAX_REQUEST_SIZE",
)
JSON_LINES = "application/jsonlines"
RAY_IMAGE_ACCOUNT = "763104351884"
RAY_GPU_AMI = "al2-ami-sagemaker-inference-gpu-3-1"  # what the Ray Serve DLC's CUDA image needs on SageMaker


def handler_environment(extra: list[str], server: str = "torchserve") -> dict[str, str]:
    """The handler's variables set in this shell, then KEY=VALUE pairs from --env; on TorchServe,
    SAGEMAKER_PROGRAM always (the Ray image runs config.yaml instead)."""
    env = {name: os.environ[name] for name in HANDLER_VARIABLES if os.environ.get(name)}
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    if server == "torchserve":
        env.update({"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"})
    return env


def sagemaker_session(args):
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # we chose the v2 line for PyTorchModel
    warnings.filterwarnings("ignore", module="sagemaker")
    import sagemaker

    boto_session = dry_run_session(args.region or "us-east-1") if args.dry_run else \
        boto3.session.Session(region_name=args.region)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER")
    sagemaker_client = boto_session.client("sagemaker", endpoint_url=endpoint)
    runtime_client = boto_session.client("sagemaker-runtime", endpoint_url=os.environ.get(
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint))
    return sagemaker.Session(boto_session=boto_session, sagemaker_client=sagemaker_client,
                             sagemaker_runtime_client=runtime_client, default_bucket="unused-default-bucket")


def is_gpu_instance(instance_type: str) -> bool:
    """ml.p3.2xlarge, ml.g5.xlarge … have NVIDIA GPUs."""
    return instance_type.removeprefix("ml.")[:1] in ("p", "g")


def ray_image_uri(region: str, instance_type: str) -> str:
    """The AWS Ray Serve DLC for SageMaker (763104351884 serves most regions; --image-uri for the others)."""
    flavour = "cuda" if is_gpu_instance(instance_type) else "cpu"
    return f"{RAY_IMAGE_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/ray:serve-ml-sagemaker-{flavour}-v1"


def build_model(args, session, env: dict[str, str] | None = None):
    """The SageMaker model over the archive: the PyTorch inference DLC 2.6 (TorchServe; a PyTorchModel, whose
    archive already holds code/, so the SDK repacks nothing) or the Ray Serve DLC (which runs config.yaml)."""
    from sagemaker.model import Model
    from sagemaker.pytorch import PyTorchModel

    name = args.name or f"efficientdet-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    env = env or handler_environment(args.env, args.server)
    if args.server == "ray":
        image = args.image_uri or ray_image_uri(session.boto_region_name, args.instance_type)
        model = Model(image_uri=image, model_data=args.model_data, role=args.role, env=env, name=name,
                      sagemaker_session=session)
    else:
        model = PyTorchModel(model_data=args.model_data, role=args.role, framework_version=args.framework_version,
                             py_version=args.py_version, env=env, name=name, image_uri=args.image_uri,
                             code_location=args.model_data.rsplit("/", 1)[0], sagemaker_session=session)
        image = args.image_uri or model.serving_image_uri(session.boto_region_name, args.instance_type)
    print(f"model {name}: image {image} ({args.server})", file=sys.stderr)
    return model, name


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


def realtime(args) -> int:
    """A realtime endpoint (or, with --serverless MEMORY_MB, a serverless one): smoke test, timing, teardown."""
    from sagemaker.serverless import ServerlessInferenceConfig

    session = sagemaker_session(args)
    model, name = build_model(args, session)
    if args.serverless:
        model.deploy(endpoint_name=name, wait=True, serverless_inference_config=ServerlessInferenceConfig(
            memory_size_in_mb=args.serverless, max_concurrency=args.max_concurrency))
    else:
        gpu_ray = args.server == "ray" and is_gpu_instance(args.instance_type)
        model.deploy(initial_instance_count=args.instance_count, instance_type=args.instance_type,
                     endpoint_name=name, wait=True, inference_ami_version=RAY_GPU_AMI if gpu_ray else None)
    print(f"endpoint {name} is InService", file=sys.stderr)
    try:
        runtime = session.sagemaker_runtime_client
        smoke_test(runtime, name, args.bucket, args.key)
        if args.requests:
            timing_loop(runtime, name, args.bucket, args.key, args.requests)
    finally:
        keep_or_delete(session, name, args.keep)
    print(name)
    return 0


def asynchronous(args) -> int:
    """An asynchronous endpoint: requests (up to 1 GB, JSON Lines of many S3 references too) are read from S3
    and answers written to --output; a smoke request goes through it before any teardown."""
    from sagemaker.async_inference import AsyncInferenceConfig

    session = sagemaker_session(args)
    model, name = build_model(args, session, large_request_environment(args, ASYNC_PAYLOAD_BYTES, ASYNC_TIMEOUT))
    notifications = {key: topic for key, topic in (("SuccessTopic", args.success_topic),
                                                   ("ErrorTopic", args.error_topic)) if topic}
    config = AsyncInferenceConfig(output_path=args.output, failure_path=f"{args.output.rstrip('/')}/failures/",
                                  max_concurrent_invocations_per_instance=args.max_concurrency,
                                  notification_config=notifications or None)
    model.deploy(initial_instance_count=args.instance_count, instance_type=args.instance_type, endpoint_name=name,
                 wait=True, async_inference_config=config)
    print(f"endpoint {name} is InService (asynchronous)", file=sys.stderr)
    try:
        smoke_test_async(session, name, args.output, args.bucket, args.key)
    finally:
        keep_or_delete(session, name, args.keep)
    print(name)
    return 0


def smoke_test_async(session, endpoint: str, output: str, bucket: str, key: str, timeout: float = 600) -> None:
    """Upload one JSON request beside the output, invoke, and print the answer SageMaker writes."""
    s3 = session.boto_session.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))
    out_bucket, _, prefix = output.removeprefix("s3://").partition("/")
    request_key = f"{prefix.rstrip('/')}/smoke-requests/{endpoint}.json".lstrip("/")
    s3.put_object(Bucket=out_bucket, Key=request_key, Body=json.dumps({"bucket": bucket, "key": key}).encode())
    answer = session.sagemaker_runtime_client.invoke_endpoint_async(
        EndpointName=endpoint, InputLocation=f"s3://{out_bucket}/{request_key}", ContentType="application/json")
    location = answer["OutputLocation"]
    print(f"smoke test: answer will be at {location}", file=sys.stderr)
    answer_bucket, _, answer_key = location.removeprefix("s3://").partition("/")
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


def batch(args) -> int:
    """A Batch Transform job over JSON Lines request files; its model is deleted however the job ends."""
    from botocore.exceptions import ClientError
    from sagemaker.exceptions import UnexpectedStatusException
    from sagemaker.transformer import Transformer

    session = sagemaker_session(args)
    model, name = build_model(args, session)
    model.create(instance_type=args.instance_type)
    try:
        transformer = Transformer(
            model_name=name, instance_count=args.instance_count, instance_type=args.instance_type,
            strategy="MultiRecord", assemble_with="Line", output_path=args.output, accept=JSON_LINES,
            max_payload=args.max_payload_mb, env=batch_environment(args), sagemaker_session=session)
        data_type = "ManifestFile" if args.manifest else "S3Prefix"
        transformer.transform(data=args.manifest or args.input, data_type=data_type, content_type=JSON_LINES,
                              split_type="Line", job_name=name, wait=True, logs=False,
                              model_client_config={"InvocationsTimeoutInSeconds": args.timeout,
                                                   "InvocationsMaxRetries": 1})
        job = session.sagemaker_client.describe_transform_job(TransformJobName=name)
        status, reason = job["TransformJobStatus"], job.get("FailureReason")
    except (UnexpectedStatusException, ClientError) as error:  # a failed job; the message holds its FailureReason
        status, reason = getattr(error, "actual_status", "Failed"), str(error)
    finally:
        if args.keep:
            print(f"kept model {name}", file=sys.stderr)
        else:
            session.sagemaker_client.delete_model(ModelName=name)
            print(f"deleted model {name}", file=sys.stderr)
    print(json.dumps({"job": name, "status": status, "output": args.output, "failure": reason}))
    return 0 if status == "Completed" else 1


def batch_environment(args) -> dict[str, str]:
    """A mini-batch of MaxPayloadInMB holds thousands of request lines (about 150 bytes each): let the
    model server take and answer it, and give it the job's invocation timeout."""
    return large_request_environment(args, args.max_payload_mb * 1024 * 1024, args.timeout)


ASYNC_PAYLOAD_BYTES = 1024**3  # an asynchronous request body may be up to 1 GB
ASYNC_TIMEOUT = 3600  # seconds SageMaker gives an asynchronous invocation
JAVA_INT_MAX = 2**31 - 1  # TorchServe reads its size limits as Java ints


def large_request_environment(args, payload: int, timeout: int) -> dict[str, str]:
    """The handler's variables for requests of up to `payload` bytes that may take `timeout` seconds."""
    env = handler_environment(args.env, args.server)
    env.setdefault("MAX_IMAGES_PER_REQUEST", str(max(1000, payload // 64)))
    env.setdefault("MAX_DETECTIONS_PER_REQUEST", str(int(env["MAX_IMAGES_PER_REQUEST"]) * 100))
    env.setdefault("SAGEMAKER_MODEL_SERVER_TIMEOUT", str(timeout))
    env.setdefault("REQUEST_TIMEOUT", str(round(timeout * 0.9)))  # answer before SageMaker gives up
    env.setdefault("TS_MAX_REQUEST_SIZE", str(min(payload + 65536, JAVA_INT_MAX)))
    env.setdefault("TS_MAX_RESPONSE_SIZE", str(min(max(payload * 100, 6553500), JAVA_INT_MAX)))
    return env


def keep_or_delete(session, name: str, keep: bool) -> None:
    """After the smoke test, however it went: the endpoint kept (--keep) or deleted with its config and model."""
    if keep:
        print(f"kept endpoint {name} (python -m deploy delete --name {name})", file=sys.stderr)
    else:
        delete_endpoint(session, name)


def delete_endpoint(session, name: str) -> None:
    client = session.sagemaker_client
    config = client.describe_endpoint(EndpointName=name).get("EndpointConfigName", name)
    client.delete_endpoint(EndpointName=name)
    client.delete_endpoint_config(EndpointConfigName=config)
    client.delete_model(ModelName=name)
    print(f"deleted endpoint {name}, its config and model", file=sys.stderr)


def delete(args) -> int:
    delete_endpoint(sagemaker_session(args), args.name)
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)

    def common(sub):
        sub.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"))
        sub.add_argument("--dry-run", action="store_true", help="print the API requests, call nothing")

    def model_options(sub):
        common(sub)
        sub.add_argument("--model-data", required=True, help="s3://…/model.tar.gz (model-archive-deploy.sh prints it)")
        sub.add_argument("--role", required=True, help="SageMaker execution role ARN")
        sub.add_argument("--instance-type", default="ml.m5.xlarge")
        sub.add_argument("--instance-count", type=int, default=1)
        sub.add_argument("--server", choices=("torchserve", "ray"), default="torchserve",
                         help="the AWS image: the PyTorch inference DLC 2.6 (TorchServe, default) or the Ray Serve DLC")
        sub.add_argument("--image-uri", help="another image (a pinned -v1.N Ray tag, another region's registry)")
        sub.add_argument("--framework-version", default="2.6", help="PyTorch DLC version (torchserve only)")
        sub.add_argument("--py-version", default="py312", help="PyTorch DLC Python (torchserve only)")
        sub.add_argument("--name", help="model / endpoint / job name (default efficientdet-<UTC time>)")
        sub.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="handler environment")
        sub.add_argument("--keep", action="store_true", help="keep the endpoint (or model) afterwards")

    rt = commands.add_parser("realtime", help="deploy an endpoint, smoke-test it, time requests, tear it down")
    model_options(rt)
    rt.add_argument("--bucket", default=example.BUCKET, help="bucket of the smoke-test image")
    rt.add_argument("--key", default=example.KEY, help="key of the smoke-test image")
    rt.add_argument("--requests", type=int, default=0, help="time this many requests (FPS, seconds per frame)")
    rt.add_argument("--serverless", type=int, metavar="MEMORY_MB", choices=(1024, 2048, 3072, 4096, 5120, 6144),
                    help="a serverless endpoint with this much memory instead (CPU only; 4 MB payloads, 60 s)")
    rt.add_argument("--max-concurrency", type=int, default=5, help="serverless: concurrent invocations (default 5)")
    rt.set_defaults(run=realtime)

    asy = commands.add_parser("async", help="deploy an asynchronous endpoint, smoke-test it, tear it down")
    model_options(asy)
    asy.add_argument("--output", required=True, help="s3:// prefix where SageMaker writes the answers")
    asy.add_argument("--success-topic", help="SNS topic ARN told of each answer")
    asy.add_argument("--error-topic", help="SNS topic ARN told of each failure")
    asy.add_argument("--max-concurrency", type=int, default=4, help="invocations in flight per instance (default 4)")
    asy.add_argument("--bucket", default=example.BUCKET, help="bucket of the smoke-test image")
    asy.add_argument("--key", default=example.KEY, help="key of the smoke-test image")
    asy.set_defaults(run=asynchronous)

    bt = commands.add_parser("batch", help="run a Batch Transform job over JSON Lines request files")
    model_options(bt)
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="s3:// prefix of .jsonl files, one {\"bucket\", \"key\"} request a line")
    source.add_argument("--manifest", help="s3:// manifest file listing such .jsonl files")
    bt.add_argument("--output", required=True, help="s3:// prefix for the results (one .out per input file)")
    bt.add_argument("--max-payload-mb", type=int, default=1, help="MaxPayloadInMB of each mini-batch (default 1)")
    bt.add_argument("--timeout", type=int, default=3600, help="InvocationsTimeoutInSeconds (default 3600)")
    bt.set_defaults(run=batch)

    dl = commands.add_parser("delete", help="delete an endpoint, its configuration and model")
    common(dl)
    dl.add_argument("--name", required=True)
    dl.set_defaults(run=delete)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
