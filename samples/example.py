"""The users' example frame: the bucket and key their notebooks and the README use (`make demo` serves it, `python -m
deploy` smoke-tests with it). Beside the sample photograph, below every package that needs it."""

BUCKET = "videoblocks-ml"
KEY = "data/object-detection-research/videoblocks/dev/sampled-items/jpg/fps-method-01/000023419/000216-9.0090.jpg"
VIDEO_KEY = "data/object-detection-research/videoblocks/dev/items/mp4/000023419.mp4"  # samples/coffee.mp4 in `make demo`
