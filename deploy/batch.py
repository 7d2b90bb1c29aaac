"""`python -m deploy batch`: a Batch Transform job over JSON Lines request files."""

from __future__ import annotations

import json
import sys

from .options import model_options
from .sagemaker_model import JSON_LINES, build_model, large_request_environment, sagemaker_session


def register(commands) -> None:
    command = commands.add_parser("batch", help="run a Batch Transform job over JSON Lines request files")
    model_options(command)
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="s3:// prefix of .jsonl files, one {\"bucket\", \"key\"} request a line")
    source.add_argument("--manifest", help="s3:// manifest file listing such .jsonl files")
    command.add_argument("--output", required=True, help="s3:// prefix for the results (one .out per input file)")
    command.add_argument("--max-payload-mb", type=int, default=1, help="MaxPayloadInMB of each mini-batch (default 1)")
    command.add_argument("--timeout", type=int, default=3600, help="InvocationsTimeoutInSeconds (default 3600)")
    command.set_defaults(run=batch)


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
