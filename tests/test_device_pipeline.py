"""The GPU path's pieces, tested on CPU: the torch letterbox against OpenCV's, tensors in and out of the detector,
the batched JPEG decode (torchvision; nvJPEG on a GPU) with EXIF orientation, a clip's frames, CUDA graphs where a GPU
is present."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import USER_BUCKET
from helpers.images import encode, gradient, video_frame
from helpers.matching import unmatched
from helpers.toolkit import Toolkit
from PIL import Image

from bench.video import encoded_by_pyav
from efficientdet import Detector
from efficientdet.preprocess import letterbox, letterbox_tensor
from request_handling import placement as placement_module
from request_handling import service as service_module
from request_handling.images import decode_image, decode_jpegs_on_device, jpeg_for_device, oriented
from request_handling.placement import serving_device, warm_up_batch_sizes
from request_handling.settings import Settings
from request_handling.video import Sampling, Video

pytestmark = pytest.mark.production

LIMITS = (50_000_000, 100_000_000)

# the handler tests run on the CPU everywhere (torchvision's libjpeg-turbo: the same calls as nvJPEG's), and on a GPU
# machine on the GPU too
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def detects_as_on_the_cpu(on_cpu, found, device: torch.device, width: int, height: int) -> bool:
    """On CPU, the fixtures' rule. On a GPU, nvJPEG's pixels are not libjpeg-turbo's (up to 44 levels apart) and its
    float32 convolutions run TF32: as many detections as on the CPU within a tenth (python -m bench.gpu measures
    how many are found again)."""
    if device.type == "cpu":
        return unmatched(on_cpu, found, width, height) == []
    return len(found) > 0 and abs(len(found) - len(on_cpu)) <= max(1, len(on_cpu) // 10)


def pinned_toolkit(model_dir, device: str, env: pytest.MonkeyPatch) -> Toolkit:
    """The handler over `model_dir`, its model on `device` whatever the machine has."""
    env.setattr(service_module, "serving_device", lambda gpu_id=None: device)
    return Toolkit(model_dir)


@pytest.mark.parametrize("height, width", [(400, 600), (1080, 1920), (300, 200), (512, 512), (100, 37), (1, 600)])
def test_torch_letterbox_follows_the_opencv_rule(height, width):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected, placement = letterbox(image, 512)
    canvas = torch.full((3, 512, 512), 7.0)
    assert letterbox_tensor(torch.from_numpy(image).permute(2, 0, 1), 512, canvas) == placement
    np.testing.assert_allclose(canvas.permute(1, 2, 0).numpy(), expected, atol=2e-4)


def test_letterbox_into_a_half_precision_channels_last_canvas():
    image = torch.from_numpy(np.array(gradient(320, 200))).permute(2, 0, 1)
    canvas = torch.empty(1, 3, 512, 512, dtype=torch.float16, memory_format=torch.channels_last)[0]
    letterbox_tensor(image, 512, canvas)
    expected, _ = letterbox(np.asarray(gradient(320, 200)), 512)
    np.testing.assert_allclose(canvas.float().permute(1, 2, 0).numpy(), expected, atol=2e-2)


def test_tensors_decoded_elsewhere_give_the_reference_detections(reference, coffee):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    expected = json.loads((reference / "d0-coffee.json").read_text())
    found = detector.detect([torch.from_numpy(np.array(coffee)).permute(2, 0, 1)], 0.2, 0.2)[0]
    assert found and unmatched(expected["detections"], found, expected["width"], expected["height"]) == []


@pytest.mark.parametrize("orientation", range(1, 9))
def test_batched_jpeg_decode_applies_exif_orientation_like_pillow(orientation):
    data = video_frame(96, 64, orientation)
    header = jpeg_for_device(data, *LIMITS)
    expected = decode_image(data, *LIMITS)
    assert (header.width, header.height) == (expected.width, expected.height) and header.pixels is None
    [pixels] = decode_jpegs_on_device([header], torch.device("cpu"))
    assert pixels.shape == (3, expected.height, expected.width)
    difference = np.abs(pixels.permute(1, 2, 0).numpy().astype(int) - expected.pixels.astype(int))
    assert difference.mean() < 1.0  # two builds of libjpeg-turbo may round a few pixels differently


def test_oriented_turns_like_pillow():
    pixels = torch.arange(2 * 3).reshape(1, 2, 3).expand(3, -1, -1)
    image = Image.fromarray(pixels[0].numpy().astype(np.uint8))
    methods = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}
    for orientation, method in methods.items():
        assert oriented(pixels, orientation)[0].tolist() == np.asarray(image.transpose(method)).tolist(), orientation


def test_only_jpegs_the_device_decoder_takes_skip_the_cpu_decode():
    assert jpeg_for_device(encode(gradient(), "PNG"), *LIMITS) is None
    assert jpeg_for_device(encode(gradient().convert("CMYK"), "JPEG"), *LIMITS) is None
    assert jpeg_for_device(b"not an image", *LIMITS) is None
    assert jpeg_for_device(encode(gradient().convert("L"), "JPEG"), *LIMITS) is not None


def test_size_limits_hold_before_device_decoding():
    data = video_frame(640, 480)
    with pytest.raises(Exception, match="pixels; the limit is MAX_IMAGE_PIXELS=1000"):
        jpeg_for_device(data, LIMITS[0], 1000)
    with pytest.raises(Exception, match="bytes; the limit is MAX_IMAGE_BYTES=10"):
        jpeg_for_device(data, 10, LIMITS[1])


def test_a_refused_jpeg_leaves_the_rest_of_the_batch_decoded():
    good = jpeg_for_device(video_frame(64, 48), *LIMITS)
    truncated = good._replace(jpeg=good.jpeg[:200])
    pixels = decode_jpegs_on_device([good, truncated, good], torch.device("cpu"))
    assert pixels[0] is not None and pixels[2] is not None and pixels[1] is None


def test_gpus_warm_up_every_power_of_two_up_to_the_batch_size():
    assert warm_up_batch_sizes(8, "cpu") == {1, 8}
    assert warm_up_batch_sizes(8, "cuda") == {1, 2, 4, 8}
    assert warm_up_batch_sizes(12, "cuda:1") == {1, 2, 4, 8, 12}


def test_a_worker_runs_on_the_gpu_the_model_server_gave_it(monkeypatch):
    """CUDA's presence is faked: on an instance of several GPUs TorchServe gives each worker its gpu_id."""
    monkeypatch.setattr(placement_module.torch.cuda, "is_available", lambda: False)
    assert serving_device(3) == serving_device() == "cpu"
    monkeypatch.setattr(placement_module.torch.cuda, "is_available", lambda: True)
    assert (serving_device(), serving_device(0), serving_device(3)) == ("cuda", "cuda:0", "cuda:3")


def test_model_fn_loads_on_the_gpu_of_the_toolkits_context(reference_model_dir, monkeypatch):
    """The toolkit hands model_fn TorchServe's context; its gpu_id reaches the service (here on CPU: ignored)."""
    given = []
    load = service_module.DetectionService.load.__func__
    monkeypatch.setattr(service_module.DetectionService, "load", classmethod(
        lambda cls, model_dir, settings, gpu_id=None: given.append(gpu_id) or load(cls, model_dir, settings, gpu_id)))
    handler = Toolkit(reference_model_dir, gpu_id=0)
    assert given == [0] and handler.invoke(video_frame(64, 48), "image/jpeg").status == 200


def test_no_cuda_graphs_on_cpu(reference):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, cuda_graphs=True)
    detector.warm_up([1, 2])
    assert detector.graphed is None


@pytest.mark.cuda
@pytest.mark.parametrize("half", [False, True])
def test_cuda_graphs_give_the_eager_network_outputs(reference, coffee, half):
    eager = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, device="cuda", half=half, cuda_graphs=False)
    graphed = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, device="cuda", half=half)
    graphed.warm_up([1, 4])
    assert graphed.graphed is not None and graphed.graphed.captured_size(3) == 4
    for count in (1, 3, 5):  # 3 is padded to 4; 5 runs eagerly
        batch, _ = eager.preprocess([coffee] * count)
        for ours, theirs in zip(graphed.forward(batch)[:2], eager.forward(batch)[:2]):
            torch.testing.assert_close(ours, theirs, atol=1e-3 if half else 1e-5, rtol=0)


@pytest.mark.cuda
def test_float32_on_a_gpu_convolves_in_float32_not_tf32(reference):
    Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, device="cuda")
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32


@pytest.mark.cuda
def test_each_worker_loads_on_its_own_gpu(reference_model_dir):
    last = torch.cuda.device_count() - 1
    handler = Toolkit(reference_model_dir, gpu_id=last)
    assert handler.model.detector.device == torch.device("cuda", last)
    assert handler.invoke(video_frame(1280, 720), "image/jpeg").status == 200


@pytest.mark.cuda
def test_gpu_detections_from_device_decoded_jpegs_match_the_cpu_decode(reference):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, device="cuda")
    detector.warm_up([1])
    data = video_frame(1920, 1080)
    [pixels] = decode_jpegs_on_device([jpeg_for_device(data, *LIMITS)], torch.device("cuda"))
    assert pixels.is_cuda
    on_gpu = detector.detect([pixels])[0]
    pillow_decoded = detector.detect([decode_image(data, *LIMITS).pixels])[0]
    assert detects_as_on_the_cpu(pillow_decoded, on_gpu, detector.device, 1920, 1080)


@pytest.fixture(scope="module", params=DEVICES)
def device_decoding_toolkit(request, reference_model_dir):
    """The handler with the device JPEG decoder forced on (on CPU: torchvision's libjpeg-turbo, the same calls)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DEVICE_JPEG_DECODE", "true")
        env.setenv("BATCH_SIZE", "4")
        yield pinned_toolkit(reference_model_dir, request.param, env)


def test_the_handler_detects_in_device_decoded_jpegs_as_in_pillow_decoded_ones(device_decoding_toolkit, reference):
    frames = [video_frame(1280, 720), video_frame(640, 480, orientation=6)]
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    for data in frames:
        response = device_decoding_toolkit.invoke(data, "image/jpeg")
        assert response.status == 200
        result = response.json()
        expected = decode_image(data, *LIMITS)
        assert (result["width"], result["height"]) == (expected.width, expected.height)
        pillow = detector.detect([expected.pixels])[0]
        assert len(pillow) > 0 and detects_as_on_the_cpu(pillow, result["detections"],
                                                         device_decoding_toolkit.model.detector.device,
                                                         expected.width, expected.height)


def test_device_decoding_keeps_other_formats_and_errors_as_they_were(device_decoding_toolkit):
    bodies = {"PNG": encode(gradient(), "PNG"), "CMYK JPEG": encode(gradient().convert("CMYK"), "JPEG"),
              "truncated JPEG": video_frame(64, 48)[:300], "JPEG": video_frame(64, 48)}
    statuses = {name: device_decoding_toolkit.invoke(data, "image/jpeg").status for name, data in bodies.items()}
    assert statuses == {"PNG": 200, "CMYK JPEG": 200, "truncated JPEG": 400, "JPEG": 200}


@pytest.mark.parametrize("device", DEVICES)
def test_device_decoding_of_a_multi_image_request_from_s3(s3_server, reference_model_dir, reference, device):
    """Six S3 images in batches of 4: the second batch's JPEGs are decoded while the first is detected. The
    expectation is each image alone (batch 1): a batch of 4 makes oneDNN block its sums otherwise, float32
    reassociation of the size the fixtures' rule allows (a box thinner than a pixel compared by its corners)."""
    objects = {"a.jpg": video_frame(1280, 720), "b.png": encode(gradient(), "PNG"), "c.jpg": video_frame(64, 48)[:300],
               "d.jpg": video_frame(640, 480, orientation=8), "e.jpg": video_frame(800, 600), "f.jpg": video_frame(320, 240)}
    for key, data in objects.items():
        s3_server.put(USER_BUCKET, f"device/{key}", data)
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**s3_server.env(), "DEVICE_JPEG_DECODE": "true", "BATCH_SIZE": "4"}.items():
            env.setenv(name, value)
        handler = pinned_toolkit(reference_model_dir, device, env)
        lines = "\n".join(json.dumps({"bucket": USER_BUCKET, "key": f"device/{key}"}) for key in objects)
        response = handler.invoke(lines, "application/jsonlines", accept="application/jsonlines")
    assert response.status == 200
    results = [json.loads(line) for line in response.body.splitlines()]
    assert [r.get("error", {}).get("status") for r in results] == [None, None, 400, None, None, None]
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    for (key, data), result in zip(objects.items(), results):
        if "error" not in result:
            image = decode_image(data, *LIMITS)
            assert (result["width"], result["height"]) == (image.width, image.height), key
            expected = detector.detect([image.pixels])[0]
            assert detects_as_on_the_cpu(expected, result["detections"], torch.device(device), image.width,
                                         image.height), key


@pytest.mark.parametrize("device", DEVICES)
def test_a_clips_frames_are_detected_on_the_device_as_on_the_cpu(reference_model_dir, reference, device, tmp_path):
    """A clip decodes on the CPU (PyAV) whatever the device; its sampled frames go to the device as uint8 pixels and
    are letterboxed and detected there (on a GPU two frames a pass): each frame's detections as the CPU finds them
    in its pixels. The clip is made by PyAV's x264, so that this runs on a GPU machine without the ffmpeg program."""
    pytest.importorskip("av")
    clip = encoded_by_pyav(tmp_path / "clip.mp4", (1280, 720), 10, 3)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BATCH_SIZE", "1" if device == "cpu" else "2")  # on CPU, the fixtures' rule: one frame a pass
        handler = pinned_toolkit(reference_model_dir, device, env)
        response = handler.invoke(clip.read_bytes(), "video/mp4",
                                  headers={"X-Amzn-SageMaker-Custom-Attributes": "sample_fps=2"})
    assert response.status == 200, response.body[:300]
    frames = response.json()["frames"]
    decoded = list(Video(clip, "clip", Settings().max_image_pixels).frames(Sampling(sample_fps=2.0)))
    assert [f["time"] for f in frames] == pytest.approx([d.time for d in decoded]) and len(frames) == 6
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    for frame, pixels in zip(frames, (d.pixels for d in decoded)):
        expected = detector.detect([pixels])[0]
        assert len(expected) > 0 and detects_as_on_the_cpu(expected, frame["detections"], torch.device(device),
                                                           1280, 720)
