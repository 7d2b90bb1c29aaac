"""What the tests share: where things are, the users' example object, and (in the modules beside this one)
clips, images, bad inputs, the matching rule and the toolkit driver."""

from __future__ import annotations

import os
from pathlib import Path

from samples import example

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("EFFICIENTDET_REFERENCE", REPO.parent / "shared" / "fixtures" / "reference"))
USER_BUCKET, USER_KEY = example.BUCKET, example.KEY  # the users' example frame, as in the README and `make demo`
SAMPLE_IMAGE = REPO / "samples" / "coffee.jpg"
