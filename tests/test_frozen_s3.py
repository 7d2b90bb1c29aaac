"""S3 frozen (stopped with its connections open) against a server with every timeout at its default."""

from __future__ import annotations

import pytest
from helpers import SAMPLE_IMAGE, USER_BUCKET, USER_KEY
from test_faults import SAGEMAKER_REALTIME_LIMIT, post

from localrun.ports import free_port
from localrun.s3server import LIMITED, SeaweedS3
from localrun.serve import ModelServer

pytestmark = pytest.mark.dev


@pytest.fixture(scope="module")
def with_defaults(tmp_path_factory, reference_model_dir):
    """A server with every S3 and request timeout at its default, over its own S3."""
    with SeaweedS3(tmp_path_factory.mktemp("s3-defaults")) as s3:
        s3.put(USER_BUCKET, USER_KEY, SAMPLE_IMAGE.read_bytes())
        with ModelServer(model=str(reference_model_dir), port=free_port(),
                         env=dict(s3.env(LIMITED), SAGEMAKER_MODEL_SERVER_WORKERS="1")) as server:
            yield {"s3": s3, "url": f"http://127.0.0.1:{server.port}"}



def test_frozen_s3_answers_inside_sagemakers_60_s_by_default_and_the_server_recovers(with_defaults):
    """S3 stopped with its connections open: without a deadline this took 80 s, past SageMaker's cut."""
    s3 = with_defaults["s3"]
    s3.freeze()
    try:
        response, seconds = post(with_defaults["url"])
    finally:
        s3.thaw()
    assert response.status_code in (503, 504), response.text[:300]
    assert seconds < SAGEMAKER_REALTIME_LIMIT
    assert response.text.splitlines()[0].startswith(("S3 ", f"s3://{USER_BUCKET}/"))
    assert post(with_defaults["url"])[0].status_code == 200
