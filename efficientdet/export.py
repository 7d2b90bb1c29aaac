"""`python -m efficientdet.export --coef N --weights PATH --format onnx|torchscript`: the network alone, for
other runtimes (ONNX Runtime, TensorRT, Triton).

What is written maps a normalised (N, 3, S, S) float32 batch, S fixed at export (the coefficient's input size
unless --input-size), to (regression (N, A, 4) as dy, dx, dh, dw; class logits (N, A, classes)): exactly
`EfficientDet.forward`. Pre-processing (`efficientdet.preprocess.letterbox`) and post-processing
(`efficientdet.boxes.select_detections`, with `efficientdet.anchors` for S) stay ours. Batch norms are folded
in first (the fast path's first rewrite; the CPU-only oneDNN kernels are not exportable and not used).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from .config import get_config, validate_input_size
from .model import EfficientDet
from .optimize import fold_all_batch_norms
from .weights import CheckpointError, build_from_state_dict, load_state_dict

FORMATS = ("onnx", "torchscript")
OUTPUT_NAMES = ("regression", "class_logits")
ONNX_OPSET = 17


def export(model: EfficientDet, input_size: int, export_format: str, out: str | Path) -> Path:
    """Write the model (batch norms folded, float32, CPU) for a fixed input size; the batch size stays free."""
    out = Path(out)
    model = fold_all_batch_norms(model).float().cpu().eval()
    example = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns about Python arithmetic on shapes, fixed by the input size
        model(example)  # fills the modules' per-shape caches: constants to every trace (torch.jit.trace checks twice)
        if export_format == "torchscript":
            torch.jit.trace(model, example).save(str(out))
        elif export_format == "onnx":
            torch.onnx.export(model, (example,), str(out), input_names=["images"], output_names=list(OUTPUT_NAMES),
                              dynamic_axes={name: {0: "batch"} for name in ("images", *OUTPUT_NAMES)},
                              opset_version=ONNX_OPSET, dynamo=False)
        else:
            raise ValueError(f"unknown format {export_format!r}; formats: {', '.join(FORMATS)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efficientdet.export", description=__doc__.splitlines()[0])
    parser.add_argument("--coef", type=int, choices=range(9), default=0)
    parser.add_argument("--weights", type=Path, required=True, help="a checkpoint (efficientdet-d{N}.pth)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--input-size", type=int, help="the fixed input size (default: the coefficient's)")
    parser.add_argument("--out", type=Path, help="output file, or a folder to write the default name into "
                                                 "(default efficientdet-d{N}-{S}.onnx or .pt)")
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    config = get_config(args.coef)
    try:
        input_size = validate_input_size(config, args.input_size or config.input_size)
    except ValueError as error:
        parser.error(str(error))
    default_name = f"{config.name}-{input_size}.{'onnx' if args.format == 'onnx' else 'pt'}"
    out = args.out or Path(default_name)
    if out.is_dir():
        out = out / default_name
    if not out.parent.is_dir():
        parser.error(f"--out {args.out}: the folder {out.parent} does not exist")
    try:
        model = build_from_state_dict(load_state_dict(args.weights), args.coef)
    except CheckpointError as error:
        parser.error(f"--weights {args.weights}: {error}")
    print(export(model, input_size, args.format, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
