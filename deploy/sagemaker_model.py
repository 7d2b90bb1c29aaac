"""What every `python -m deploy` command shares: the SageMaker session (or --dry-run's), the model over the archive on
either image, the handler's environment, and the teardown."""

from __future__ import annotations

import os
import sys
import warnings
from datetime import UTC, datetime

import boto3

from .autoscaling import remove_scaling
from .dryrun import dry_run_session
from .instances import is_gpu_instance
from .options import usage_error

HANDLER_VARIABLES = (
    "EFFICIENTDET_COMPOUND_COEF", "EFFICIENTDET_VERSION", "EFFICIENTDET_WEIGHTS", "EFFICIENTDET_INPUT_SIZE",
    "DEFAULT_PRED_THRESHOLD", "DEFAULT_IOU_THRESHOLD", "DEFAULT_MAX_DETECTIONS", "USE_FLOAT16", "CPU_PRECISION", "CUDA_GRAPHS", "ONEDNN_GRAPH",
    "DEVICE_JPEG_DECODE", "JPEG_REDUCED_DECODE", "ALLOWED_BUCKETS", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "MAX_VIDEO_BYTES", "MAX_VIDEO_FRAMES", "MAX_IMAGES_PER_REQUEST", "MAX_DETECTIONS_PER_REQUEST",
    "BATCH_SIZE", "REQUEST_BATCH_SIZE", "REQUEST_BATCH_WAIT_MS", "PARALLEL_BATCHES", "REQUEST_TIMEOUT",
    "S3_CONNECT_TIMEOUT", "S3_READ_TIMEOUT", "S3_MAX_ATTEMPTS", "S3_MAX_CONCURRENCY", "EFFICIENTDET_NUM_THREADS",
    "SAGEMAKER_MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_TIMEOUT", "TS_MAX_REQUEST_SIZE",
)
JSON_LINES = "application/jsonlines"
RAY_IMAGE_ACCOUNT = "763104351884"
RAY_GPU_AMI = "al2-ami-sagemaker-inference-gpu-3-1"  # what the Ray Serve DLC's CUDA image needs on SageMaker


JAVA_INT_MAX = 2**31 - 1  # TorchServe reads its size limits as Java ints


def handler_environment(extra: list[str], server: str = "torchserve") -> dict[str, str]:
    """The handler's variables set in this shell, then KEY=VALUE pairs from --env; on TorchServe,
    SAGEMAKER_PROGRAM always (the Ray image runs config.yaml instead)."""
    env = {name: os.environ[name] for name in HANDLER_VARIABLES if os.environ.get(name)}
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise usage_error(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    if server == "torchserve":
        env.update({"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"})
    return env


def sagemaker_session(args):
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


def deploy_or_clean_up(session, model, name: str, **deploy) -> None:
    """model.deploy(**deploy); when AWS refuses any step or the endpoint fails to start, whatever was created of the
    model, its endpoint configuration and endpoint is deleted before the error goes on."""
    try:
        model.deploy(endpoint_name=name, wait=False, **deploy)
        wait_until_in_service(session, name)
    except BaseException:
        remove_what_exists(session, name)
        raise


def wait_until_in_service(session, name: str) -> None:
    """Back once the endpoint is in service; the SDK's waiter (which raises with the failure reason when the endpoint
    fails to start) sleeps a 30 s poll before its first look, so an endpoint already in service is not given to it."""
    if session.sagemaker_client.describe_endpoint(EndpointName=name)["EndpointStatus"] != "InService":
        session.wait_for_endpoint(name)


def remove_what_exists(session, name: str) -> None:
    """The endpoint, endpoint configuration and model of this name, where each exists."""
    from botocore.exceptions import ClientError

    client = session.sagemaker_client
    for operation, key in ((client.delete_endpoint, "EndpointName"), (client.delete_endpoint_config,
                                                                         "EndpointConfigName"),
                           (client.delete_model, "ModelName")):
        try:
            operation(**{key: name})
            print(f"deleted {key.removesuffix('Name')} {name} after the failed deployment", file=sys.stderr)
        except ClientError:
            pass  # never created


def keep_or_delete(session, name: str, keep: bool) -> None:
    """After the smoke test, however it went: the endpoint kept (--keep) or deleted with its config and model."""
    if keep:
        print(f"kept endpoint {name} (python -m deploy delete --name {name})", file=sys.stderr)
    else:
        delete_endpoint(session, name)


def scaling_clients(session):
    """Application Auto Scaling's and CloudWatch's clients (AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING and
    AWS_ENDPOINT_URL_CLOUDWATCH apply, as botocore reads them)."""
    return session.boto_session.client("application-autoscaling"), session.boto_session.client("cloudwatch")


def delete_endpoint(session, name: str) -> None:
    """The endpoint's autoscaling first (a scalable target left behind would refer to nothing), then the endpoint,
    its configuration and model."""
    remove_scaling(*scaling_clients(session), name)
    client = session.sagemaker_client
    config = client.describe_endpoint(EndpointName=name).get("EndpointConfigName", name)
    client.delete_endpoint(EndpointName=name)
    client.delete_endpoint_config(EndpointConfigName=config)
    client.delete_model(ModelName=name)
    print(f"deleted endpoint {name}, its config and model", file=sys.stderr)
