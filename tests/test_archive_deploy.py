"""model-archive-build.sh, model-archive-deploy.sh and `python -m deploy`, against real local services."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace
from typing import NamedTuple
from unittest import mock

import boto3
import pytest
import requests
from helpers import REPO, SAMPLE_IMAGE

from deploy.sagemaker_model import HANDLER_VARIABLES
from localrun.ports import free_port
from localrun.ray_serve import RayServer
from localrun.serve import ModelServer
from request_handling.settings import load_settings

pytestmark = pytest.mark.dev


def build(out_dir, *extra) -> tuple[str, str]:
    result = subprocess.run([str(REPO / "model-archive-build.sh"), "--out", str(out_dir), *extra],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    path, checksum = result.stdout.splitlines()[-2:]
    return path, checksum.removeprefix("sha256 ")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, reference):
    out = tmp_path_factory.mktemp("archive")
    first = build(out / "a", "--weights", str(reference / "efficientdet-d0.pth"))
    second = build(out / "b", "--weights", str(reference / "efficientdet-d0.pth"))
    return first, second


def test_archive_layout_and_reproducibility(archive):
    (path, checksum), (_, second_checksum) = archive
    assert checksum == second_checksum and re.fullmatch(r"[0-9a-f]{64}", checksum)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"efficientdet-d0.pth", "config.yaml", "code/inference.py", "code/ray_app.py"} <= set(names)
    assert "code/requirements.txt" not in names
    code_folders = {n.split("/")[1] for n in names if n.startswith("code/") and n.count("/") > 1}
    assert code_folders == {"efficientdet", "request_handling", "lib"}  # lib: the wheels the archive carries
    assert not any("__pycache__" in n or n.endswith(".pyc") or "tests" in n for n in names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)


def test_bad_arguments_print_usage_and_exit_2():
    result = subprocess.run([str(REPO / "model-archive-build.sh"), "--coef", "12"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


@pytest.mark.parametrize("server_class", [ModelServer, RayServer], ids=["torchserve", "ray"])
def test_make_serve_serves_the_archive_on_both_images(archive, s3_server, server_class):
    """One model.tar.gz: `make serve MODEL=…` and `make serve SERVER=ray MODEL=…` answer alike."""
    path = archive[0][0]
    with server_class(model=path, port=free_port(), env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}) as server:
        response = requests.post(f"http://127.0.0.1:{server.port}/invocations", data=SAMPLE_IMAGE.read_bytes(),
                                 headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert response.status_code == 200 and response.json()["detections"]


@pytest.mark.parametrize("environment", ["dev", "staging", "prod"])
def test_deploy_script_uploads_and_verifies(archive, s3_server, environment):
    path = archive[0][0]
    s3_server.client().create_bucket(Bucket="model-bucket") if environment == "dev" else None
    env = dict(os.environ, **s3_server.env(), ARCHIVE=path, MODEL_BUCKET="model-bucket")
    result = subprocess.run([str(REPO / "model-archive-deploy.sh"), environment], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(rf"s3://model-bucket/models/efficientdet/videoblocks/{environment}/(\d{{8}}T\d{{6}})/model.tar.gz", uri)
    assert match, uri
    key = uri.removeprefix("s3://model-bucket/")
    body = s3_server.client().get_object(Bucket="model-bucket", Key=key)["Body"].read()
    with open(path, "rb") as f:
        assert body == f.read()


class KmsBucket:
    """An S3 client double for an SSE-KMS bucket: its ETag is not the object's MD5."""

    def __init__(self, stored_size: int | None = None) -> None:
        self.stored_size, self.put = stored_size, {}

    def put_object(self, **request):
        self.put = dict(request, Body=request["Body"].read())

    def head_object(self, Bucket, Key):
        size = len(self.put["Body"]) if self.stored_size is None else self.stored_size
        return {"ContentLength": size, "ETag": '"9f620878e06d28774406017480a59fd4-kms"', "ServerSideEncryption": "aws:kms"}


def test_upload_to_an_sse_kms_bucket_is_verified_by_content_md5_not_etag(tmp_path):
    from deploy.upload import upload_archive

    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"model bytes")
    bucket = KmsBucket()
    uri = upload_archive(archive, "model-bucket", "prod", client=bucket)
    assert uri.startswith("s3://model-bucket/models/efficientdet/videoblocks/prod/")
    assert bucket.put["ContentMD5"] == base64.b64encode(hashlib.md5(b"model bytes").digest()).decode()
    assert bucket.put["Body"] == b"model bytes"
    with pytest.raises(RuntimeError, match="10 bytes stored, 11 sent"):
        upload_archive(archive, "model-bucket", "prod", client=KmsBucket(stored_size=10))


def test_deploy_script_refuses_unknown_environment_and_missing_archive(tmp_path):
    bad = subprocess.run([str(REPO / "model-archive-deploy.sh"), "qa"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
    missing = subprocess.run([str(REPO / "model-archive-deploy.sh")], capture_output=True, text=True,
                             env=dict(os.environ, ARCHIVE=str(tmp_path / "none.tar.gz")))
    assert missing.returncode != 0 and "not found" in missing.stderr


@pytest.fixture(scope="module")
def sagemaker_double():
    """moto in server mode: a local SageMaker (and SageMaker runtime), Application Auto Scaling and CloudWatch API."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL_SAGEMAKER": url, "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING": url,
           "AWS_ENDPOINT_URL_CLOUDWATCH": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    yield url, env
    server.stop()


class CliRun(NamedTuple):
    returncode: int | str | None
    stdout: str
    stderr: str


def deploy_cli(env: dict, *args) -> CliRun:
    """`python -m deploy ARGS` run in this process (a command line each costs seconds of imports) with `env` and the
    handler's threshold set: its exit status and what it printed."""
    from deploy.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, dict(env, DEFAULT_PRED_THRESHOLD="0.3")), redirect_stdout(out), \
            redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as exited:
            status = exited.code
    return CliRun(status, out.getvalue(), err.getvalue())


def deploy_command_line(env: dict, *args) -> subprocess.CompletedProcess:
    """`python -m deploy ARGS` as a user runs it: what reaches the terminal, the SDK's own logging included."""
    return subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))


MODEL_DATA = "s3://videoblocks-ml/models/efficientdet/videoblocks/dev/20261124T000000/model.tar.gz"
ROLE = "arn:aws:iam::123456789012:role/sagemaker"


def test_realtime_against_sagemaker_double(sagemaker_double):
    url, env = sagemaker_double
    result = deploy_cli(env, "realtime", "--model-data", MODEL_DATA, "--role", ROLE, "--name", "efficientdet-test",
                        "--instance-type", "ml.g4dn.xlarge", "--env", "USE_FLOAT16=true", "--requests", "3", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smoke test text/csv" in result.stdout and "smoke test application/json" in result.stdout
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith('{"requests"')][0])
    assert summary["requests"] == 3 and summary["fps"] > 0
    client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    container = client.describe_model(ModelName="efficientdet-test")["PrimaryContainer"]
    assert container["ModelDataUrl"] == MODEL_DATA
    assert container["Image"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-gpu-py312"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["DEFAULT_PRED_THRESHOLD"] == "0.3"
    assert container["Environment"]["USE_FLOAT16"] == "true"
    deleted = deploy_cli(env, "delete", "--name", "efficientdet-test")
    assert deleted.returncode == 0, deleted.stderr[-2000:]
    assert client.list_endpoints()["Endpoints"] == []


def test_batch_dry_run_prints_every_request():
    result = deploy_cli({}, "batch", "--dry-run", "--model-data", MODEL_DATA, "--role", ROLE, "--name", "frames",
                        "--input", "s3://videoblocks-ml/requests/", "--output", "s3://videoblocks-ml/results/")
    assert result.returncode == 0, result.stderr[-3000:]
    calls = [line.split(" ", 2) for line in result.stdout.splitlines() if line.startswith("DRY-RUN ")]
    operations = [call[1] for call in calls]
    assert "sagemaker.CreateModel" in operations and "sagemaker.CreateTransformJob" in operations
    job = json.loads(next(call[2] for call in calls if call[1] == "sagemaker.CreateTransformJob"))
    assert job["BatchStrategy"] == "MultiRecord" and job["MaxPayloadInMB"] == 1
    assert job["ModelClientConfig"]["InvocationsTimeoutInSeconds"] == 3600
    assert int(job["Environment"]["TS_MAX_REQUEST_SIZE"]) > 1024 * 1024
    assert job["TransformInput"]["SplitType"] == "Line" and job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["MaxConcurrentTransforms"] == 1  # one request at a time spreads over every core
    model = json.loads(next(call[2] for call in calls if call[1] == "sagemaker.CreateModel"))
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6-cpu-py312")


@pytest.mark.parametrize("instance_type, extra, concurrent", [
    ("ml.g5.12xlarge", (), 4), ("ml.p3.2xlarge", (), 1), ("ml.g5.48xlarge", ("--max-payload-mb", "13"), None),
    ("ml.m5.xlarge", ("--max-concurrent-transforms", "3"), 3), ("ml.m5.xlarge", ("--max-concurrent-transforms", "0"), None)])
def test_batch_sends_each_instance_one_request_per_gpu(instance_type, extra, concurrent):
    """A multi-GPU instance gets as many requests at once as it has GPUs (the model server's workers, one a GPU);
    Batch Transform's limit of 100 MB in flight per instance is a usage error, before anything is created."""
    result = deploy_cli({}, "batch", "--dry-run", "--model-data", MODEL_DATA, "--role", ROLE, "--name", "frames",
                        "--instance-type", instance_type, "--input", "s3://videoblocks-ml/requests/",
                        "--output", "s3://videoblocks-ml/results/", *extra)
    if concurrent is None:
        assert result.returncode == 2 and "--max-concurrent-transforms" in result.stderr
        assert "Traceback" not in result.stderr and "DRY-RUN" not in result.stdout
        return
    assert result.returncode == 0, result.stderr[-3000:]
    job = next(json.loads(line.split(" ", 2)[2]) for line in result.stdout.splitlines()
               if line.startswith("DRY-RUN sagemaker.CreateTransformJob "))
    assert job["MaxConcurrentTransforms"] == concurrent


def test_a_failed_batch_job_still_deletes_its_model(sagemaker_double, monkeypatch, capsys):
    from sagemaker.exceptions import UnexpectedStatusException
    from sagemaker.transformer import Transformer

    from deploy.__main__ import main

    url, env = sagemaker_double
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def failing_job(self, *args, **kwargs):
        raise UnexpectedStatusException("Error for Transform job failing-job: Failed. Reason: ClientError: "
                                        "no input files", allowed_statuses=["Completed"], actual_status="Failed")

    monkeypatch.setattr(Transformer, "transform", failing_job)
    status = main(["batch", "--model-data", MODEL_DATA, "--role", ROLE, "--name", "failing-job",
                   "--input", "s3://videoblocks-ml/requests/", "--output", "s3://videoblocks-ml/results/"])
    assert status == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "Failed" and "no input files" in summary["failure"]
    client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    assert client.list_models()["Models"] == []


class RecordingEnvironment(dict):
    """An empty environment that remembers every variable name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, name, default=None):
        self.read.add(name)
        return super().get(name, default)


def test_deploy_forwards_every_variable_the_handler_reads(tmp_path):
    env = RecordingEnvironment()
    load_settings(tmp_path, env)
    assert env.read and env.read <= set(HANDLER_VARIABLES), sorted(env.read - set(HANDLER_VARIABLES))


@pytest.mark.parametrize("instance_type, flavour", [("ml.g5.xlarge", "cuda"), ("ml.c7i.xlarge", "cpu")])
def test_realtime_on_the_ray_image_dry_run(instance_type, flavour):
    result = deploy_cli({}, "realtime", "--dry-run", "--server", "ray", "--model-data", MODEL_DATA, "--role", ROLE,
                        "--name", "ray-endpoint", "--instance-type", instance_type)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = {line.split(" ", 2)[1]: json.loads(line.split(" ", 2)[2])
             for line in result.stdout.splitlines() if line.startswith("DRY-RUN ")}
    container = calls["sagemaker.CreateModel"]["PrimaryContainer"]
    assert container["Image"] == f"763104351884.dkr.ecr.us-east-1.amazonaws.com/ray:serve-ml-sagemaker-{flavour}-v1"
    assert container["ModelDataUrl"] == MODEL_DATA and "SAGEMAKER_PROGRAM" not in container["Environment"]
    assert container["Environment"]["DEFAULT_PRED_THRESHOLD"] == "0.3"
    variant = calls["sagemaker.CreateEndpointConfig"]["ProductionVariants"][0]
    assert variant.get("InferenceAmiVersion") == ("al2-ami-sagemaker-inference-gpu-3-1" if flavour == "cuda" else None)


def dry_run_calls(*args) -> dict[str, dict]:
    result = deploy_cli({}, *args, "--dry-run", "--model-data", MODEL_DATA, "--role", ROLE)
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.split(" ", 2)[1]: json.loads(line.split(" ", 2)[2])
            for line in result.stdout.splitlines() if line.startswith("DRY-RUN ")}


def test_async_endpoint_dry_run():
    calls = dry_run_calls("async", "--name", "frames-async", "--output", "s3://videoblocks-ml/async/",
                          "--success-topic", "arn:aws:sns:us-east-1:1:done", "--error-topic", "arn:aws:sns:us-east-1:1:failed")
    config = calls["sagemaker.CreateEndpointConfig"]["AsyncInferenceConfig"]
    assert config["OutputConfig"]["S3OutputPath"] == "s3://videoblocks-ml/async/"
    assert config["OutputConfig"]["NotificationConfig"] == {"SuccessTopic": "arn:aws:sns:us-east-1:1:done",
                                                            "ErrorTopic": "arn:aws:sns:us-east-1:1:failed"}
    assert config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 4
    environment = calls["sagemaker.CreateModel"]["PrimaryContainer"]["Environment"]
    assert int(environment["TS_MAX_REQUEST_SIZE"]) >= 1024**3 and int(environment["REQUEST_TIMEOUT"]) > 60
    assert calls["sagemaker-runtime.InvokeEndpointAsync"]["InputLocation"].startswith("s3://videoblocks-ml/async/")
    assert "sagemaker.DeleteEndpoint" in calls


def test_serverless_endpoint_dry_run():
    calls = dry_run_calls("realtime", "--name", "frames-serverless", "--serverless", "4096")
    variant = calls["sagemaker.CreateEndpointConfig"]["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5} and "InstanceType" not in variant
    assert calls["sagemaker.CreateModel"]["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6-cpu-py312")
    assert "sagemaker-runtime.InvokeEndpoint" in calls


def test_serverless_against_sagemaker_double(sagemaker_double):
    url, env = sagemaker_double
    result = deploy_cli(env, "realtime", "--serverless", "2048", "--model-data", MODEL_DATA, "--role", ROLE,
                        "--name", "efficientdet-serverless", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smoke test text/csv" in result.stdout
    client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    config = client.describe_endpoint_config(EndpointConfigName="efficientdet-serverless")
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert deploy_cli(env, "delete", "--name", "efficientdet-serverless").returncode == 0


def moto_client(url: str, service: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def scaling_state(url: str, endpoint: str) -> tuple[list, list, list]:
    """The endpoint variant's scalable targets, scaling policies and wake-up alarm, as moto holds them."""
    autoscaling = moto_client(url, "application-autoscaling")
    resource = f"endpoint/{endpoint}/variant/AllTraffic"
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)
    alarms = moto_client(url, "cloudwatch").describe_alarms(AlarmNamePrefix=endpoint)
    return targets["ScalableTargets"], policies["ScalingPolicies"], alarms["MetricAlarms"]


def test_realtime_autoscale_leaves_a_target_tracking_policy_and_delete_removes_it(sagemaker_double):
    url, env = sagemaker_double
    result = deploy_cli(env, "realtime", "--model-data", MODEL_DATA, "--role", ROLE, "--name", "scaled",
                        "--instance-type", "ml.c5.xlarge", "--autoscale", "1:4", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    (target,), (policy,), alarms = scaling_state(url, "scaled")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount" and alarms == []
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 8.0 * 4 * 60 * 0.5  # docs/deploy.md#autoscaling: 4 vCPUs of ml.c5.xlarge
    assert tracking["ScaleInCooldown"] > tracking["ScaleOutCooldown"]
    deleted = deploy_cli(env, "delete", "--name", "scaled")
    assert deleted.returncode == 0, deleted.stderr[-2000:]
    assert scaling_state(url, "scaled") == ([], [], [])
    assert "removed autoscaling of scaled" in deleted.stderr


def test_async_autoscale_to_zero_leaves_both_policies_and_the_wake_up_alarm(sagemaker_double):
    url, env = sagemaker_double
    moto_client(url, "s3").create_bucket(Bucket="async-answers")
    result = deploy_cli(dict(env, AWS_ENDPOINT_URL_S3=url), "async", "--model-data", MODEL_DATA, "--role", ROLE,
                        "--name", "scaled-async", "--output", "s3://async-answers/out/", "--autoscale", "0:4", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    (target,), policies, (alarm,) = scaling_state(url, "scaled-async")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 4)
    by_type = {policy["PolicyType"]: policy for policy in policies}
    assert set(by_type) == {"TargetTrackingScaling", "StepScaling"}
    backlog = by_type["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert backlog["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    assert backlog["CustomizedMetricSpecification"]["Dimensions"] == [{"Name": "EndpointName", "Value": "scaled-async"}]
    assert backlog["TargetValue"] == 4.0  # the instance's --max-concurrency
    step = by_type["StepScaling"]["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ChangeInCapacity" and step["StepAdjustments"][0]["ScalingAdjustment"] == 1
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity" and alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["AlarmActions"] == [by_type["StepScaling"]["PolicyARN"]]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1.0)
    deleted = deploy_cli(env, "delete", "--name", "scaled-async")
    assert deleted.returncode == 0, deleted.stderr[-2000:]
    assert scaling_state(url, "scaled-async") == ([], [], [])


@pytest.mark.parametrize("args, words", [
    (("realtime", "--autoscale", "0:4"), "keeps at least one instance"),
    (("realtime", "--autoscale", "4:1"), "expected MIN:MAX"),
    (("realtime", "--autoscale", "1:4", "--serverless", "2048"), "serverless endpoint scales by itself"),
    (("realtime", "--autoscale", "1:4", "--instance-type", "ml.g5.xlarge"), "pass --target-invocations"),
    (("realtime", "--autoscale", "2:4"), "--instance-count 1 is outside"),
    (("async", "--output", "s3://b/o/", "--autoscale", "0:4", "--instance-count", "5"), "outside --autoscale"),
])
def test_wrong_autoscale_options_are_usage_errors_before_anything_is_created(args, words):
    result = deploy_cli({}, *args, "--dry-run", "--model-data", MODEL_DATA, "--role", ROLE)
    assert result.returncode == 2
    assert words in result.stderr and "DRY-RUN" not in result.stdout and "Traceback" not in result.stderr, \
        result.stderr[-2000:]


def test_a_request_aws_refuses_is_one_line_and_exit_1_and_leaves_nothing_behind(sagemaker_double):
    """moto's SageMaker knows an older list of instance types: its refusal is told as AWS's would be, and the model
    created before it is deleted."""
    url, env = sagemaker_double
    result = deploy_command_line(env, "realtime", "--model-data", MODEL_DATA, "--role", ROLE, "--name", "refused",
                        "--instance-type", "ml.c6a.xlarge")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "│" not in result.stderr
    assert "python -m deploy realtime: An error occurred (ValidationException) when calling the CreateEndpointConfig" \
        in result.stderr
    assert "deleted Model refused after the failed deployment" in result.stderr
    assert moto_client(url, "sagemaker").list_models(NameContains="refused")["Models"] == []


class NewResources:
    """A SageMaker session whose new endpoint and transform job are in `status`; the SDK's waiters, which sleep
    a poll before their first look, are recorded and tell a failure as the SDK does."""

    def __init__(self, status: str) -> None:
        self.waited, self.deleted = [], []
        self.sagemaker_client = SimpleNamespace(
            describe_endpoint=lambda EndpointName: {"EndpointStatus": status},
            describe_transform_job=lambda TransformJobName: {"TransformJobStatus": status},
            delete_endpoint=lambda EndpointName: self.deleted.append("endpoint"),
            delete_endpoint_config=lambda EndpointConfigName: self.deleted.append("endpoint config"),
            delete_model=lambda ModelName: self.deleted.append("model"))

    def failed(self, name: str):
        from sagemaker.exceptions import UnexpectedStatusException

        self.waited.append(name)
        return UnexpectedStatusException(f"Error for {name}: Failed. Reason: the container did not pass the ping "
                                         "health check", allowed_statuses=["InService"], actual_status="Failed")

    def wait_for_endpoint(self, name: str) -> None:
        raise self.failed(name)

    def wait_for_transform_job(self, name: str) -> None:
        raise self.failed(name)


def test_an_endpoint_still_creating_is_waited_for_and_removed_when_it_fails_to_start():
    from sagemaker.exceptions import UnexpectedStatusException

    from deploy.sagemaker_model import deploy_or_clean_up

    session = NewResources("Creating")
    with pytest.raises(UnexpectedStatusException, match="ping health check"):
        deploy_or_clean_up(session, SimpleNamespace(deploy=lambda **_: None), "starting", initial_instance_count=1)
    assert session.waited == ["starting"] and session.deleted == ["endpoint", "endpoint config", "model"]
    in_service = NewResources("InService")  # moto's and --dry-run's endpoints: no 30 s sleep before the first look
    deploy_or_clean_up(in_service, SimpleNamespace(deploy=lambda **_: None), "ready", initial_instance_count=1)
    assert in_service.waited == in_service.deleted == []


def test_a_transform_job_in_progress_is_waited_for_and_one_ended_is_not():
    from sagemaker.exceptions import UnexpectedStatusException

    from deploy.batch import finished_transform_job

    running = NewResources("InProgress")
    with pytest.raises(UnexpectedStatusException):
        finished_transform_job(running, "frames")
    assert running.waited == ["frames"]
    ended = NewResources("Completed")
    assert finished_transform_job(ended, "frames") == {"TransformJobStatus": "Completed"} and ended.waited == []


CLIP_KINDS = {".mp4": "libx264", ".mts": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".mpg": "mpeg2video"}


@pytest.fixture(scope="module")
def clip_library(s3_server, tmp_path_factory):
    """25 clips in five containers under s3://clip-library/catalogue/ (some in sub-folders), beside a poster image
    and a text file that are not clips."""
    from helpers.clips import encode, require_ffmpeg

    require_ffmpeg()
    folder = tmp_path_factory.mktemp("clips")
    bodies = {suffix: encode(folder / f"clip{suffix}", width=160, height=90, seconds=1, codec=codec).read_bytes()
              for suffix, codec in CLIP_KINDS.items()}
    s3 = s3_server.client()
    s3.create_bucket(Bucket="clip-library")
    keys = [f"catalogue/{'day2/' if number % 3 else ''}clip-{number:02d}{suffix}"
            for number, suffix in enumerate(list(CLIP_KINDS) * 5)]
    for key in keys:
        s3.put_object(Bucket="clip-library", Key=key, Body=bodies[key[key.rindex("."):]])
    s3.put_object(Bucket="clip-library", Key="catalogue/poster.jpg", Body=SAMPLE_IMAGE.read_bytes())
    s3.put_object(Bucket="clip-library", Key="catalogue/notes.txt", Body=b"not a clip")
    return s3, sorted(keys)


def request_files(s3, prefix: str) -> dict[str, list[dict]]:
    listing = s3.list_objects_v2(Bucket="clip-library", Prefix=prefix).get("Contents", [])
    return {item["Key"]: [json.loads(line) for line in s3.get_object(Bucket="clip-library", Key=item["Key"])[
        "Body"].read().decode().splitlines()] for item in listing}


def clips_batch(env: dict, name: str, *extra) -> CliRun:
    return deploy_cli(env, "batch", "--model-data", MODEL_DATA, "--role", ROLE, "--name", name, "--instance-count", "3",
                      "--clips", "s3://clip-library/catalogue/", "--output", "s3://clip-library/answers/", *extra)


def test_batch_over_a_clip_library_sends_each_clip_once_and_resumes_with_the_rest(sagemaker_double, s3_server,
                                                                                 clip_library):
    url, moto_env = sagemaker_double
    s3, keys = clip_library
    env = dict(moto_env, **s3_server.env(), AWS_ENDPOINT_URL_SAGEMAKER=url)
    first = clips_batch(env, "clips-first", "--sample-fps", "1", "--aggregate", "segments")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.splitlines()[-1])["clips"] == 25
    files = request_files(s3, "answers/requests/clips-first/")
    assert len(files) >= 3 and all(key.endswith(".jsonl") for key in files)
    lines = [line for file in files.values() for line in file]
    assert sorted(line["key"] for line in lines) == keys  # every clip once; not the poster, not the notes
    assert all(line == {"bucket": "clip-library", "key": line["key"], "sample_fps": 1.0, "aggregate": "segments"}
               for line in lines)
    job = moto_client(url, "sagemaker").describe_transform_job(TransformJobName="clips-first")
    assert job["BatchStrategy"] == "SingleRecord" and job["DataProcessing"]["JoinSource"] == "Input"
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == \
        "s3://clip-library/answers/requests/clips-first/"

    # What Batch Transform leaves after a job stopped part-way: one file's answers, each joined to its request line
    # (one of them an error, which a resumed job tries again), and a line cut short.
    first_file, first_lines = sorted(files.items())[0]
    answers = [dict(line, SageMakerOutput={"source": f"s3://clip-library/{line['key']}", "frames": []})
               for line in first_lines]
    answers[0]["SageMakerOutput"] = {"source": "s3://clip-library/x", "error": {"status": 504, "message": "deadline"}}
    body = "\n".join(json.dumps(answer) for answer in answers) + '\n{"bucket": "clip-library", "key": "catal'
    s3.put_object(Bucket="clip-library", Key=f"answers/{first_file.rsplit('/', 1)[1]}.out", Body=body.encode())
    answered = {answer["key"] for answer in answers[1:]}

    resumed = clips_batch(env, "clips-resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert (summary["clips"], summary["already_answered"]) == (25 - len(answered), len(answered))
    sent = [line["key"] for file in request_files(s3, "answers/requests/clips-resumed/").values() for line in file]
    assert sorted(sent) == sorted(set(keys) - answered)

    for number, line in enumerate(answer for file in request_files(s3, "answers/requests/clips-resumed/").values()
                                  for answer in file):
        s3.put_object(Bucket="clip-library", Key=f"answers/rest-{number}.jsonl.out", Body=json.dumps(
            dict(line, SageMakerOutput={"source": f"s3://clip-library/{line['key']}", "frames": []})).encode())
    done = clips_batch(env, "clips-done", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"job": None, "status": "Completed",
                                                         "output": "s3://clip-library/answers/", "clips": 0,
                                                         "already_answered": 25}
    jobs = moto_client(url, "sagemaker").list_transform_jobs()["TransformJobSummaries"]
    assert "clips-done" not in {job["TransformJobName"] for job in jobs}


def test_batch_clips_dry_run_lists_for_real_and_prints_every_request(s3_server, clip_library):
    result = clips_batch(s3_server.env(), "clips-dry", "--dry-run", "--keyframes")
    assert result.returncode == 0, result.stderr[-3000:]
    puts = [line for line in result.stdout.splitlines() if line.startswith("DRY-RUN s3.PutObject")]
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("  {")]
    assert len(puts) == 3 and sorted(line["key"] for line in printed) == clip_library[1]
    assert all(line["keyframes"] is True for line in printed)
    assert request_files(clip_library[0], "answers/requests/clips-dry/") == {}  # nothing written


@pytest.mark.parametrize("args, words", [
    (("--clips", "s3://clip-library/nothing-here/"), "no clips there"),
    (("--clips", "s3://clip-library/catalogue/", "--max-frames", "0"), "max_frames"),
    (("--clips", "s3://clip-library/catalogue/", "--keyframes", "--sample-fps", "2"), "not allowed with"),
    (("--input", "s3://clip-library/requests/", "--resume"), "go with --clips"),
])
def test_wrong_clip_options_are_usage_errors(s3_server, clip_library, args, words):
    result = deploy_cli(s3_server.env(), "batch", "--dry-run", "--model-data", MODEL_DATA, "--role", ROLE,
                        "--output", "s3://clip-library/answers/", *args)
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
