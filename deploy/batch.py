"""`python -m deploy batch`: a Batch Transform job over JSON Lines request files, or over a clip library (--clips):
its request files written for the job, one clip a request, each answer joined to its request line."""

from __future__ import annotations

import json
import os
import sys

import boto3

from request_handling.bodies import option_fields, split_s3_uri
from request_handling.errors import RequestError

from .clips import answered_clips, list_clips, request_line, split_for_instances
from .instances import instance_gpus
from .options import model_options, usage_error
from .sagemaker_model import JSON_LINES, build_model, large_request_environment, sagemaker_session


def register(commands) -> None:
    command = commands.add_parser("batch", help="run a Batch Transform job over JSON Lines request files")
    model_options(command)
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="s3:// prefix of .jsonl files, one {\"bucket\", \"key\"} request a line")
    source.add_argument("--manifest", help="s3:// manifest file listing such .jsonl files")
    source.add_argument("--clips", help="s3:// prefix of clips: one request a clip, written under --output's "
                                        "requests/<job>/ in at least --instance-count files")
    command.add_argument("--output", required=True, help="s3:// prefix for the results (one .out per input file)")
    clip_options = command.add_argument_group("--clips", "each clip's request (the handler's options, docs/video.md)")
    sampling = clip_options.add_mutually_exclusive_group()
    sampling.add_argument("--sample-fps", type=float, help="frames a second of video time (the handler's default: 1)")
    sampling.add_argument("--every-n-frames", type=int)
    sampling.add_argument("--keyframes", action="store_true", default=None, help="the clip's keyframes only")
    clip_options.add_argument("--max-frames", type=int)
    clip_options.add_argument("--aggregate", choices=("frames", "segments", "both"))
    clip_options.add_argument("--resume", action="store_true",
                              help="leave out the clips already answered under --output (by an earlier job)")
    command.add_argument("--max-payload-mb", type=int, default=1, help="MaxPayloadInMB of each mini-batch (default 1)")
    command.add_argument("--max-concurrent-transforms", type=int, metavar="N",
                         help="requests each instance is sent at once (default: its GPUs, 1 on a CPU instance)")
    command.add_argument("--timeout", type=int, default=3600, help="InvocationsTimeoutInSeconds (default 3600)")
    command.set_defaults(run=batch)


def batch(args) -> int:
    """A Batch Transform job over JSON Lines request files; its model is deleted however the job ends."""
    from botocore.exceptions import ClientError
    from sagemaker.exceptions import UnexpectedStatusException
    from sagemaker.transformer import Transformer

    clip_request = clip_request_options(args)
    concurrency = concurrent_transforms(args)
    session = sagemaker_session(args)
    model, name = build_model(args, session)
    summary = {}
    if args.clips:
        requests, summary = write_clip_requests(args, session, name, clip_request)
        if requests is None:
            print(json.dumps({"job": None, "status": "Completed", "output": args.output, **summary}))
            return 0
    model.create(instance_type=args.instance_type)
    try:
        transformer = Transformer(
            model_name=name, instance_count=args.instance_count, instance_type=args.instance_type,
            strategy="SingleRecord" if args.clips else "MultiRecord", assemble_with="Line", output_path=args.output,
            accept=JSON_LINES, max_payload=args.max_payload_mb, max_concurrent_transforms=concurrency,
            env=batch_environment(args), sagemaker_session=session)
        data_type = "ManifestFile" if args.manifest else "S3Prefix"
        transformer.transform(data=args.manifest or (requests if args.clips else args.input), data_type=data_type,
                              content_type=JSON_LINES, split_type="Line", job_name=name, wait=False, logs=False,
                              join_source="Input" if args.clips else None,
                              model_client_config={"InvocationsTimeoutInSeconds": args.timeout,
                                                   "InvocationsMaxRetries": 1})
        job = finished_transform_job(session, name)
        status, reason = job["TransformJobStatus"], job.get("FailureReason")
    except (UnexpectedStatusException, ClientError) as error:  # a failed job; the message holds its FailureReason
        status, reason = getattr(error, "actual_status", "Failed"), str(error)
    finally:
        if args.keep:
            print(f"kept model {name}", file=sys.stderr)
        else:
            session.sagemaker_client.delete_model(ModelName=name)
            print(f"deleted model {name}", file=sys.stderr)
    print(json.dumps({"job": name, "status": status, "output": args.output, "failure": reason, **summary}))
    return 0 if status == "Completed" else 1


def finished_transform_job(session, name: str) -> dict:
    """The job's description once it has ended; the SDK's waiter (which raises on a failed job) sleeps a 5 s poll
    before its first look, so a job already ended is not given to it."""
    job = session.sagemaker_client.describe_transform_job(TransformJobName=name)
    if job["TransformJobStatus"] in ("InProgress", "Stopping"):
        session.wait_for_transform_job(name)
        job = session.sagemaker_client.describe_transform_job(TransformJobName=name)
    return job


def concurrent_transforms(args) -> int:
    """MaxConcurrentTransforms: by default one request per GPU, each to the model server's worker on its own GPU
    (left unset, Batch Transform sends one at a time, and a multi-GPU instance works on one GPU); one on a CPU
    instance, where one request's batches already run on every core (`PARALLEL_BATCHES`). Batch Transform takes
    at most 100 MB in flight per instance (MaxConcurrentTransforms × MaxPayloadInMB)."""
    concurrency = args.max_concurrent_transforms
    if concurrency is None:
        concurrency = max(1, instance_gpus(args.instance_type))
    if concurrency < 1 or concurrency * args.max_payload_mb > 100:
        raise usage_error(f"--max-concurrent-transforms {concurrency} × --max-payload-mb {args.max_payload_mb}: "
                          "Batch Transform takes at least 1 and at most 100 MB per instance in all")
    return concurrency


def batch_environment(args) -> dict[str, str]:
    """A mini-batch of MaxPayloadInMB holds thousands of request lines (about 150 bytes each): let the
    model server take and answer it, and give it the job's invocation timeout."""
    return large_request_environment(args, args.max_payload_mb * 1024 * 1024, args.timeout)


def clip_request_options(args) -> dict[str, object]:
    """Each clip's options as its request line carries them, checked as the handler checks them; usage errors
    before anything is created."""
    given = {"sample_fps": args.sample_fps, "every_n_frames": args.every_n_frames, "keyframes": args.keyframes,
             "max_frames": args.max_frames, "aggregate": args.aggregate}
    given = {name: value for name, value in given.items() if value is not None}
    if not args.clips:
        if given or args.resume:
            raise usage_error("--sample-fps, --every-n-frames, --keyframes, --max-frames, --aggregate and --resume "
                              "go with --clips")
        return {}
    try:
        return option_fields(given, "--clips: ")
    except RequestError as error:
        raise usage_error(error.message) from None


def write_clip_requests(args, session, job: str, options: dict[str, object]) -> tuple[str | None, dict[str, int]]:
    """The clips under --clips (less those answered under --output with --resume) as request files under
    --output's requests/<job>/: their prefix (None when every clip is answered), and the counts for the summary."""
    # the listings are read even with --dry-run: what the job would be sent depends on them
    reader = boto3.session.Session(region_name=args.region).client(
        "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))
    writer = session.boto_session.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))
    clips = list(list_clips(reader, args.clips))
    if not clips:
        raise usage_error(f"--clips {args.clips}: no clips there")
    answered = answered_clips(reader, args.output) if args.resume else set()
    todo = [clip for clip in clips if (clip.bucket, clip.key) not in answered]
    skipped = len(clips) - len(todo)
    print(f"{len(clips)} clips under {args.clips}, {skipped} already answered, {len(todo)} to send", file=sys.stderr)
    counts = {"clips": len(todo), "already_answered": skipped}
    if not todo:
        return None, counts
    bucket, prefix = split_s3_uri(args.output)
    requests = f"{prefix.rstrip('/')}/requests/{job}/".lstrip("/")
    for number, share in enumerate(split_for_instances(todo, args.instance_count)):
        key = f"{requests}{job}-{number:04d}.jsonl"
        lines = [request_line(clip, options) for clip in share]
        writer.put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode() + b"\n",
                          ContentType=JSON_LINES)
        if args.dry_run:
            print("\n".join(f"  {line}" for line in lines), flush=True)
    return f"s3://{bucket}/{requests}", counts
