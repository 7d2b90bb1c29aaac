"""The pure parts of `python -m deploy`'s autoscaling and clip-library jobs."""

from __future__ import annotations

import argparse
import json

import pytest

from deploy.autoscaling import Bounds, bounds, default_target_invocations
from deploy.clips import Clip, clips_answered_in, request_line, split_for_instances
from deploy.instances import instance_vcpus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, expected", [("1:4", Bounds(1, 4)), ("0:4", Bounds(0, 4)), ("3:3", Bounds(3, 3))])
def test_autoscale_bounds(text, expected):
    assert bounds(text) == expected


@pytest.mark.parametrize("text", ["4:1", "0:0", "1-4", "4", "-1:2", "a:b"])
def test_wrong_autoscale_bounds(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected MIN:MAX"):
        bounds(text)


@pytest.mark.parametrize("instance_type, vcpus", [("ml.t2.medium", 1), ("ml.c5.large", 2), ("ml.c5.xlarge", 4),
                                                  ("ml.m5.2xlarge", 8), ("ml.c7i.48xlarge", 192)])
def test_instance_vcpus(instance_type, vcpus):
    assert instance_vcpus(instance_type) == vcpus


def test_the_default_target_is_what_an_instance_sustains_times_the_safety_factor():
    assert default_target_invocations("ml.c5.xlarge") == 8 * 4 * 60 // 2
    assert default_target_invocations("ml.c5.2xlarge") == 2 * default_target_invocations("ml.c5.xlarge")
    with pytest.raises(ValueError, match="pass --target-invocations"):
        default_target_invocations("ml.g5.xlarge")
    with pytest.raises(ValueError, match="pass --target-invocations"):
        default_target_invocations("ml.c5.huge")


def clips(*sizes: int) -> list[Clip]:
    return [Clip("library", f"clip-{number:02d}.mov", size) for number, size in enumerate(sizes)]


def test_clips_are_dealt_into_files_of_about_equal_bytes_each_once():
    library = clips(900, 100, 100, 100, 500, 400, 300, 200, 100)
    files = split_for_instances(library, 3)
    assert len(files) == 3 and sorted(clip for file in files for clip in file) == sorted(library)
    assert sorted(sum(clip.size for clip in file) for file in files) == [900, 900, 900]
    assert all(file == sorted(file, key=lambda clip: clip.key) for file in files)


def test_fewer_clips_than_files_leaves_no_empty_file():
    assert [len(file) for file in split_for_instances(clips(5, 7), 3)] == [1, 1]


def test_a_request_line_is_the_handlers_contract():
    line = request_line(Clip("library", "a/b.mxf", 10), {"sample_fps": 1.0, "aggregate": "segments"})
    assert json.loads(line) == {"bucket": "library", "key": "a/b.mxf", "sample_fps": 1.0, "aggregate": "segments"}


def test_answered_clips_are_the_joined_lines_without_an_error():
    lines = [json.dumps({"bucket": "library", "key": "done.mov", "SageMakerOutput": {"frames": []}}),
             json.dumps({"bucket": "library", "key": "failed.mov", "SageMakerOutput": {"error": {"status": 504}}}),
             json.dumps({"bucket": "library", "key": "no-answer.mov"}),
             json.dumps(["not", "an", "object"]),
             '{"bucket": "library", "key": "cut-sh']
    assert list(clips_answered_in(lines)) == [("library", "done.mov")]


class NotAllowed:
    """An Application Auto Scaling client for a role without its permissions."""

    def describe_scaling_policies(self, **_):
        from botocore.exceptions import ClientError
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
                          "DescribeScalingPolicies")


def test_deleting_with_a_role_that_may_not_see_autoscaling_goes_on(capsys):
    from deploy.autoscaling import remove_scaling

    remove_scaling(NotAllowed(), None, "plain-endpoint")
    assert "could not check the autoscaling of plain-endpoint" in capsys.readouterr().err
