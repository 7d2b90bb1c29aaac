"""The model package against the reference fixtures: state-dict layout, raw outputs, detections."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.matching import iou, unmatched, unmatched_within

from efficientdet import COCO_LABELS, CheckpointError, Detector, EfficientDet, get_config
from efficientdet import detector as detector_module
from efficientdet.anchors import generate_anchors
from efficientdet.backbone import ChannelGate, band_means, mean_bands
from efficientdet.config import DEFAULT_ANCHOR_RATIOS, DEFAULT_ANCHOR_SCALES
from efficientdet.download import weights_url
from efficientdet.head import MergedPredictionHeads
from efficientdet.layers import (
    GatedPointwiseConv,
    OneDNNConv2d,
    SameConv2d,
    native_bfloat16,
    onednn_available,
    pixel_rows,
    pointwise_matrix,
)
from efficientdet.onednn_graph import OneDNNGraphNetwork, onednn_graph_available
from efficientdet.optimize import fold_all_batch_norms, optimize_for_inference
from efficientdet.untrained import synthetic_images, untrained_state_dict
from efficientdet.weights import build_from_state_dict, load_state_dict
from samples.photos import natural_photo

pytestmark = pytest.mark.production


@pytest.mark.parametrize("coef", range(9))
def test_state_dict_matches_reference_layout(reference, coef):
    expected = json.loads((reference / f"efficientdet-d{coef}.keys.json").read_text())
    actual = {key: list(value.shape) for key, value in EfficientDet(get_config(coef)).state_dict().items()}
    assert set(actual) == set(expected)
    assert {k: v for k, v in actual.items() if expected[k] != v} == {}


@pytest.mark.parametrize("fast", [False, True])
def test_raw_outputs_match_reference(reference, fast):
    raw = np.load(reference / "d0-raw-128.npz")
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, input_size=128, fast=fast)
    batch = torch.from_numpy(raw["input"]).contiguous(memory_format=detector.memory_format)
    regression, class_logits, anchors = detector.forward(batch)
    np.testing.assert_allclose(regression.numpy(), raw["regression"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(torch.sigmoid(class_logits).numpy(), raw["classification"], atol=1e-4, rtol=0)
    assert np.array_equal(anchors.numpy()[None], raw["anchors"])


@pytest.mark.parametrize("fast", [False, True])
def test_coffee_detections_match_reference(reference, coffee, fast):
    expected = json.loads((reference / "d0-coffee.json").read_text())
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, fast=fast)
    detections = detector.detect([coffee], score_threshold=0.2, iou_threshold=0.2)[0]
    assert (expected["width"], expected["height"]) == (coffee.shape[1], coffee.shape[0])
    assert len(detections) > 0
    assert unmatched(expected["detections"], detections, expected["width"], expected["height"]) == []
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    for d in detections:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 600 and 0 <= y1 < y2 <= 400
        assert d.label == COCO_LABELS[d.class_id]


def test_batching_changes_nothing(reference, coffee):
    """Up to float32 reassociation: a batch of two makes oneDNN block its sums otherwise, within the fixtures' rule."""
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    other = np.ascontiguousarray(coffee[50:350, 100:550][::-1])  # a different size and content
    together = detector.detect([coffee, other], score_threshold=0.2, iou_threshold=0.2)
    alone = [detector.detect([image], 0.2, 0.2)[0] for image in (coffee, other)]
    for image, batched, single in zip((coffee, other), together, alone):
        assert len(single) > 0
        assert unmatched(as_dicts(single), batched, image.shape[1], image.shape[0]) == []


def as_dicts(detections):
    return [{"class_id": d.class_id, "score": d.score, "box": list(d.box)} for d in detections]


def test_thresholds_per_image_and_max_detections(reference, coffee):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    loose, strict, capped = detector.detect([coffee] * 3, score_threshold=[0.2, 0.28, 0.2], max_detections=[100, 100, 3])
    assert len(loose) > len(strict) > 0
    assert all(d.score > 0.28 for d in strict)
    assert len(capped) == 3
    assert unmatched(as_dicts(loose[:3]), capped, coffee.shape[1], coffee.shape[0]) == []


def test_full_sizes_put_boxes_in_the_pixels_of_the_full_image(reference, coffee):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    reduced = detector.detect([coffee])[0]
    full = detector.detect([coffee], full_sizes=[(1200, 800)])[0]
    assert len(full) == len(reduced) > 0
    for small, large in zip(reduced, full):
        assert (large.class_id, large.score) == (small.class_id, small.score)
        assert large.box == pytest.approx(tuple(2 * v for v in small.box), rel=1e-5)


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN: the fast path uses PyTorch's kernels")
def test_warm_up_packs_every_kernel_before_the_first_image(reference, coffee):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, onednn_graph=False)
    kernels = [m for m in detector.model.modules() if isinstance(m, OneDNNConv2d)]
    assert kernels and not any(k.packed_shapes for k in kernels)
    detector.warm_up([1, 2])
    packed = [k.packed_shapes for k in kernels]
    assert all(packed)
    detector.detect([coffee])
    assert [k.packed_shapes for k in kernels] == packed


@pytest.mark.skipif(not onednn_graph_available(), reason="this torch build has no oneDNN Graph fuser")
def test_warm_up_compiles_a_onednn_graph_per_batch_size_before_the_first_image(reference, coffee):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    assert isinstance(detector.model, OneDNNGraphNetwork) and not detector.model.compiled
    detector.warm_up([1, 2])
    shapes = [shape for shape, _, _ in detector.model.compiled]
    assert shapes == [(1, 3, 512, 512), (2, 3, 512, 512)]
    detector.detect([coffee])
    assert len(detector.model.compiled) == 2 and not detector.model.refused


@pytest.mark.skipif(not onednn_graph_available(), reason="this torch build has no oneDNN Graph fuser")
@pytest.mark.parametrize("bfloat16, compiled", [
    (False, True),
    pytest.param(True, False, marks=pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")),
], ids=["float32", "bfloat16"])
def test_d2_is_a_onednn_graph_in_float32_and_eager_in_bfloat16(bfloat16, compiled):
    """768 px: inside float32's graph sizes (up to 1024 px), past bfloat16's (up to 640 px)."""
    model = EfficientDet(get_config(2))
    model.load_state_dict(untrained_state_dict(2))
    assert isinstance(Detector(model, bfloat16=bfloat16).model, OneDNNGraphNetwork) is compiled


@pytest.mark.skipif(not onednn_graph_available(), reason="this torch build has no oneDNN Graph fuser")
def test_a_batch_size_not_compiled_at_warm_up_runs_image_by_image_through_the_one_image_graph(reference):
    """Ray Serve merges requests into batches of any size up to REQUEST_BATCH_SIZE: none of them compiles a graph
    inside a request."""
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    detector.warm_up([1])
    batch = synthetic_images(512, count=3).contiguous(memory_format=torch.channels_last)
    regression, class_logits, _ = detector.forward(batch)
    assert [shape for shape, _, _ in detector.model.compiled] == [(1, 3, 512, 512)]
    for i in range(3):
        one_regression, one_logits, _ = detector.forward(batch[i:i + 1])
        assert torch.equal(regression[i], one_regression[0]) and torch.equal(class_logits[i], one_logits[0])


@pytest.mark.skipif(not onednn_graph_available(), reason="this torch build has no oneDNN Graph fuser")
def test_a_onednn_graph_that_will_not_compile_leaves_the_eager_fast_path(reference, coffee, monkeypatch, caplog):
    """Should TorchScript or oneDNN refuse the network (another torch), the detector says so once and runs the
    eager network with its fused kernels: the same detections as a detector built that way."""
    def refused(*args, **kwargs):
        raise RuntimeError("bad optional access")

    eager = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, onednn_graph=False)
    monkeypatch.setattr(torch.jit, "trace", refused)
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    with caplog.at_level(logging.WARNING):
        detector.warm_up([1])
    assert detector.model.refused and "bad optional access" in caplog.text
    assert detector.detect([coffee])[0] == eager.detect([coffee])[0]


@pytest.mark.skipif(not onednn_graph_available(), reason="this torch build has no oneDNN Graph fuser")
def test_a_size_onednn_refuses_runs_eagerly_and_the_other_sizes_keep_their_graphs(reference, coffee, monkeypatch):
    """oneDNN may refuse one input size and compile the others (a Zen 4's refuses 128 px with some torch versions):
    the refused size runs eagerly, the size compiled at warm-up goes on running its graph, and a later size still
    compiles."""
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    detector.warm_up([1])
    (key, graph), = detector.model.compiled.items()
    runs = []
    detector.model.compiled[key] = lambda batch: runs.append(batch) or graph(batch)

    def refused(*args, **kwargs):
        raise RuntimeError("could not create a primitive descriptor for the reorder primitive")

    traced = torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", refused)
    small = synthetic_images(128, count=1).contiguous(memory_format=torch.channels_last)
    eager = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, onednn_graph=False)
    assert all(torch.equal(a, b) for a, b in zip(detector.forward(small), eager.forward(small)))
    assert [shape for shape, _, _ in detector.model.refused] == [(1, 3, 128, 128)]
    detector.detect([coffee])
    assert len(runs) == 1
    monkeypatch.setattr(torch.jit, "trace", traced)
    detector.forward(synthetic_images(256, count=1).contiguous(memory_format=torch.channels_last))
    assert [shape for shape, _, _ in detector.model.compiled] == [(1, 3, 512, 512), (1, 3, 256, 256)]


def test_custom_input_size(reference, coffee):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, input_size=640)
    assert detector.input_size == 640
    assert detector.detect([coffee], 0.2, 0.2)[0]
    with pytest.raises(ValueError, match="multiple of 128"):
        Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, input_size=500)


def test_d8_needs_multiples_of_256():
    model = EfficientDet(get_config(8))
    with pytest.raises(ValueError, match="multiple of 256"):
        Detector(model, input_size=1408)


def test_legacy_torch_1_4_file_loads_weights_only(reference, tmp_path):
    state_dict = load_state_dict(reference / "efficientdet-d0.pth")
    legacy = tmp_path / "legacy.pth"
    torch.save(state_dict, legacy, _use_new_zipfile_serialization=False)
    model = build_from_state_dict(load_state_dict(legacy), 0)
    assert torch.equal(model.state_dict()["classifier.header.pointwise_conv.conv.bias"],
                       state_dict["classifier.header.pointwise_conv.conv.bias"])


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(evil)


def test_wrong_coefficient_is_a_clear_error(reference):
    with pytest.raises(CheckpointError, match="efficientdet-d1"):
        Detector.from_checkpoint(reference / "efficientdet-d0.pth", 1)


def test_one_class_custom_model_loads(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "faces.pth"
    torch.save(EfficientDet(get_config(0), num_classes=1).state_dict(), path)
    detector = Detector.from_checkpoint(path, 0, labels=["face"], input_size=256)
    assert detector.num_classes == 1
    results = detector.detect([np.zeros((100, 80, 3), np.uint8)], score_threshold=0.0, max_detections=5)
    assert len(results[0]) == 5 and {d.label for d in results[0]} == {"face"}


def test_custom_anchor_count_must_match(tmp_path):
    path = tmp_path / "anchors.pth"
    torch.save(EfficientDet(get_config(0), num_anchors=6).state_dict(), path)
    assert Detector.from_checkpoint(path, 0, anchor_scales=[1.0, 1.5]).anchors.scales == (1.0, 1.5)
    with pytest.raises(ValueError, match="anchors per location"):
        Detector.from_checkpoint(path, 0)


def test_anchors_are_generated_in_reference_order():
    anchors = generate_anchors(128, range(3, 8), 4.0, DEFAULT_ANCHOR_SCALES, DEFAULT_ANCHOR_RATIOS)
    assert anchors.shape == (9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1), 4)
    first = anchors[0].tolist()  # P3, row 0, column 0, scale 1, ratio (1, 1): a 32-pixel box around (4, 4)
    assert first == [4 - 16, 4 - 16, 4 + 16, 4 + 16]


def test_half_precision_on_cpu_falls_back_with_one_warning(reference, caplog):
    with caplog.at_level(logging.WARNING):
        detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, half=True)
    assert detector.dtype == torch.float32
    assert sum("half precision" in r.message for r in caplog.records) == 1


def test_float16_plumbing_runs_on_cpu(reference, coffee):
    """What USE_FLOAT16 does on a GPU (folded, channels-last, float16 network; float32 anchors and
    decoding), run on the CPU, which can execute float16 convolutions slowly: the dtypes meet correctly."""
    checkpoint = load_state_dict(reference / "efficientdet-d0.pth")
    expected = Detector(build_from_state_dict(checkpoint, 0)).detect([coffee])[0]
    half = Detector(build_from_state_dict(checkpoint, 0))
    half.model = optimize_for_inference(build_from_state_dict(checkpoint, 0), torch.device("cpu"), torch.float16)
    half.dtype = torch.float16
    regression, class_logits, anchors = half.forward(half.preprocess([coffee])[0])
    assert regression.dtype == class_logits.dtype == torch.float16 and anchors.dtype == torch.float32
    actual = half.detect([coffee])[0]
    for e in (d for d in expected if d.score >= 0.21):
        assert any(a.class_id == e.class_id and abs(a.score - e.score) <= 5e-3 and iou(a.box, e.box) >= 0.95
                   for a in actual), e


def test_bfloat16_is_refused_on_a_cpu_without_it(reference, monkeypatch):
    """The capability is faked: which CPUs have native bfloat16 varies between the machines tests run on."""
    monkeypatch.setattr(detector_module, "native_bfloat16", lambda: False)
    with pytest.raises(ValueError, match="AVX-512 BF16 or AMX"):
        Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, bfloat16=True)


# bfloat16 keeps 8 significant bits: every layer's activations round by up to 2^-8 of their size. On the sample
# photograph that moved every anchor's score by at most 0.011, and each detection kept a partner within 0.01 whose
# corners lie within 3 px on an AMX Xeon; on an AVX-512 BF16 Zen 5 without AMX, whose kernels accumulate in other
# orders, 0.012 and 2.7 px; on an AVX-512 BF16 Zen 4, as a oneDNN Graph or eagerly, within 0.008 and 4 px or 0.02
# and 1.8 px. The test allows about twice the score change and a pixel more: 0.02 in score, 4 px per corner.
BFLOAT16_SCORE_TOLERANCE, BFLOAT16_CORNER_PX = 0.02, 4.0


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
@pytest.mark.parametrize("onednn_graph", [True, False], ids=["onednn-graph", "eager"])
def test_bfloat16_detections_stay_near_float32(reference, coffee, onednn_graph):
    """CPU_PRECISION=bfloat16: the fused network in bfloat16; anchors and post-processing in float32."""
    checkpoint = reference / "efficientdet-d0.pth"
    expected = Detector.from_checkpoint(checkpoint, 0).detect([coffee], 0.2)[0]
    reduced = Detector.from_checkpoint(checkpoint, 0, bfloat16=True, onednn_graph=onednn_graph)
    regression, class_logits, anchors = reduced.forward(reduced.preprocess([coffee])[0])
    assert regression.dtype == class_logits.dtype == torch.bfloat16 and anchors.dtype == torch.float32
    if onednn_graph and onednn_graph_available():
        assert isinstance(reduced.model, OneDNNGraphNetwork) and reduced.model.compiled and not reduced.model.refused
    actual = reduced.detect([coffee], 0.2 - BFLOAT16_SCORE_TOLERANCE, max_detections=1000)[0]
    assert len(expected) >= 20
    assert unmatched_within(expected, actual, *coffee.shape[1::-1], threshold=0.2,
                            score_tolerance=BFLOAT16_SCORE_TOLERANCE, corner_px=BFLOAT16_CORNER_PX) == []


def test_coco_labels():
    assert len(COCO_LABELS) == 90 and COCO_LABELS[0] == "person" and COCO_LABELS[11] == ""
    assert COCO_LABELS[89] == "toothbrush"


def test_weights_urls_point_at_the_published_releases():
    assert weights_url(0).endswith("/1.0/efficientdet-d0.pth")
    assert weights_url(8).endswith("/1.2/efficientdet-d8.pth")


@pytest.mark.parametrize("coef, size", [(0, 384), (8, 256)])
def test_fast_path_matches_plain_path(coef, size):
    """Folded batch norms, channels-last and fused oneDNN kernels, including odd-sized levels and P8."""
    model = EfficientDet(get_config(coef))
    model.load_state_dict(untrained_state_dict(coef, calibration_size=size))
    plain, fast = Detector(model, input_size=size, fast=False), Detector(model, input_size=size, fast=True)
    torch.manual_seed(1)
    batch = synthetic_images(size)  # inputs like those the batch norms were calibrated on: a stable network
    expected, actual = plain.forward(batch), fast.forward(batch.contiguous(memory_format=torch.channels_last))
    for e, a in zip(expected[:2], actual[:2]):
        # float32 rounding of the folded weights only: a layout or padding slip would be of the outputs' size
        assert (a - e).abs().max() <= 5e-5 * e.abs().max()


@pytest.mark.parametrize("size", [64, 63], ids=["even: padded one more after", "odd: padded evenly"])
def test_a_strided_convolution_with_its_kernel_grown_computes_the_padded_one(size):
    torch.manual_seed(0)
    conv, x = SameConv2d(8, 8, 3, stride=2, groups=8), torch.randn(1, 8, size, size)
    with torch.no_grad():
        padded = conv(x)
        conv.use_grown_kernel()
        grown = conv(x)
    assert grown.shape == padded.shape
    # nine products of unit-sized numbers summed, with zeros added, in another order: float32 rounding only
    torch.testing.assert_close(grown, padded, rtol=0, atol=1e-6)


# The fast path computes the plain path's float32 network with its sums in another order (folded weights, fused
# kernels, matrix products). Reassociation alone moves scores by at most 2e-6 and box corners by at most 2e-3 px at
# D0 (on an AMD EPYC Zen 3, AVX2); the bounds are 5× that. A sum that loses precision fails them: channel means taken
# as a matrix product with a row of 1 / (H·W) put scores 6e-5 off there, and 8e-5 on an AVX-512 Zen 5.
FAST_SCORE_TOLERANCE = 1e-5
FAST_CORNER_PX = 0.01


@pytest.mark.parametrize("onednn_graph", [True, False], ids=["oneDNN Graph", "eager fused kernels"])
@pytest.mark.parametrize("image, threshold", [("coffee", 0.15), ("square photo", 0.2), ("landscape photo", 0.15)])
def test_fast_path_detections_are_the_plain_paths_one_by_one(reference, coffee, image, threshold, onednn_graph):
    """Hundreds of detections at a low threshold, each with a partner within 1e-5 in score and 0.01 px per corner:
    the sample photograph letterboxed, and generated photographs square (no padding) and 1280×720; the fast path
    compiled as a oneDNN Graph (the CPU's float32 default) and run eagerly with its fused kernels."""
    if onednn_graph and not onednn_graph_available():
        pytest.skip("this torch build has no oneDNN Graph fuser")
    pixels = {"coffee": coffee, "square photo": natural_photo(512, 512, seed=1),
              "landscape photo": natural_photo(1280, 720, seed=0)}[image]
    height, width = pixels.shape[:2]
    plain = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, fast=False)
    fast = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, fast=True, onednn_graph=onednn_graph)
    expected, actual = (d.detect([pixels], threshold, 0.5, max_detections=1000)[0] for d in (plain, fast))
    assert 250 <= len(expected) < 1000
    assert unmatched_within(expected, actual, width, height, threshold=threshold, score_tolerance=FAST_SCORE_TOLERANCE,
                            corner_px=FAST_CORNER_PX) == []


def test_a_grouped_pointwise_convolution_multiplies_by_its_block_diagonal_matrix():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 6, 1, groups=2)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = pixel_rows(conv(x).contiguous(memory_format=torch.channels_last))
        actual = pixel_rows(x) @ pointwise_matrix(conv) + conv.bias
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_merged_heads_return_each_heads_outputs(fused):
    """Both heads as one over twice the channels: the box and class outputs of the two heads, to float32 rounding."""
    if fused and not onednn_available():
        pytest.skip("this torch build has no oneDNN")
    torch.manual_seed(0)
    model = fold_all_batch_norms(EfficientDet(get_config(0)))
    features = [torch.randn(2, 64, size, size).contiguous(memory_format=torch.channels_last) for size in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        expected = model.regressor(features), model.classifier(features)
        merged = model.regressor.merged_with(model.classifier)
        if fused:
            merged.use_fused_kernels()
        actual = merged(features)
    for e, a in zip(expected, actual):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=1e-5 * e.abs().max().item(), rtol=0)


@pytest.mark.skipif(not onednn_available(), reason="the merged heads are a oneDNN rewrite")
def test_the_cpu_fast_path_runs_both_heads_as_one(reference):
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0, onednn_graph=False)
    assert isinstance(detector.model.heads, MergedPredictionHeads)
    assert not hasattr(detector.model, "classifier")


def test_bfloat16_band_means_are_the_means_to_bfloat16_rounding():
    """Row bands averaged by pooling, each band's mean rounded to bfloat16 (2^-8 relative at most), band after band."""
    x = torch.rand(2, 16, 64, 48).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    expected = x.float().unflatten(2, (4, 16)).mean((3, 4)).transpose(1, 2).reshape(2, 4 * 16)
    actual = band_means(x, 4)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=0, rtol=2**-8)


def test_the_bfloat16_gate_averages_the_bands_inside_its_reduce_product():
    """The gate from band means equals the gate from their mean, to one bfloat16 rounding of its output."""
    torch.manual_seed(0)
    reduce, expand = torch.nn.Conv2d(32, 8, 1), torch.nn.Conv2d(8, 32, 1)
    gate = ChannelGate(reduce, expand)
    x = torch.randn(2, 32, 16, 24).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    bands = mean_bands(x)
    means = band_means(x, bands).reshape(2, bands, 32).mean(1)
    with torch.no_grad():
        expected = torch.sigmoid(expand(F.silu(reduce(means[:, :, None, None]))).flatten(1))
        actual = gate(x)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected, atol=2**-9, rtol=0)


@pytest.mark.skipif(not onednn_available(), reason="the gated product is a oneDNN rewrite")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [False, True])
def test_a_gated_pointwise_convolution_is_the_convolution_of_the_gated_input(dtype, with_residual):
    """conv(gate · x) (+ residual) for two images: float32 to its rounding, bfloat16 to one rounding of its output."""
    if dtype == torch.bfloat16 and not native_bfloat16():
        pytest.skip("oneDNN has bfloat16 products only on CPUs with native bfloat16")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 40, 1)
    x, residual = (torch.randn(2, channels, 6, 10).to(dtype).contiguous(memory_format=torch.channels_last)
                   for channels in (24, 40))
    gate = torch.rand(2, 24).to(dtype)
    with torch.no_grad():
        expected = conv(x.float() * gate.float()[:, :, None, None]) + (residual.float() if with_residual else 0)
        actual = GatedPointwiseConv(conv.to(dtype))(x, gate, residual if with_residual else None)
    assert actual.dtype == dtype and actual.is_contiguous(memory_format=torch.channels_last)
    tolerance = 1e-5 if dtype == torch.float32 else 2**-8
    torch.testing.assert_close(actual.float(), expected, atol=tolerance * expected.abs().max().item(), rtol=0)
