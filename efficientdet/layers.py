"""Building blocks with TensorFlow-style "same" padding, named as in the published checkpoints.

Each block offers its own inference rewrites: `fold_batch_norm` (the norm after a convolution becomes
part of its weights) and `fused` (the convolution, with the SiLU after it, as one oneDNN kernel).
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that makes a strided window cover ceil(size / stride) outputs, as TF does."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_padding_2d(x: torch.Tensor, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) "same" padding for a square window over the last two dims of x."""
    return (*same_padding(x.shape[-2], kernel, stride), *same_padding(x.shape[-1], kernel, stride))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (x86: AVX-512 BF16 or AMX; Arm: the BF16 extension), rather
    than oneDNN emulating it in float32 instructions, which is slower than float32 itself."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if platform.machine().lower() in ("aarch64", "arm64"):
        try:
            return " bf16" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return False


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H·W, C): a view of a channels-last tensor, no copy."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


def pointwise_matrix(conv: nn.Conv2d) -> nn.Parameter:
    """A 1×1 convolution's weights as the (C_in, C_out) matrix that multiplies channels-last pixel rows (a grouped
    convolution's as the block-diagonal matrix of its groups)."""
    groups = conv.weight.detach().reshape(conv.weight.shape[0], -1).chunk(conv.groups)
    return nn.Parameter(torch.block_diag(*groups).t().contiguous(), requires_grad=False)


def bias_or_zeros(conv: nn.Conv2d) -> nn.Parameter:
    bias = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(conv.weight.shape[0])
    return nn.Parameter(bias, requires_grad=False)


# A 1×1 convolution with at most this many multiply-adds runs as one matrix product: oneDNN's fixed cost per
# call outweighs its speed on small pyramid levels (the crossover: docs/benchmarks.md).
SMALL_POINTWISE_MACS = 8 * 2**20
# In a bfloat16 network the matrix product runs in float32 (see OneDNNConv2d), so the threshold is lower: it leaves
# the larger products on oneDNN's bfloat16 kernels, whose speed grows with their size.
SMALL_BFLOAT16_POINTWISE_MACS = 1 * 2**20


class OneDNNConv2d(nn.Module):
    """A "same"-padded convolution (optionally followed by SiLU) as one oneDNN kernel; CPU float32 only.

    `torch.ops.mkldnn._convolution_pointwise` is the kernel PyTorch's own compiler emits on CPU.
    TensorFlow pads a stride-2 convolution of an even-sized input one more pixel after than before.
    Instead of copying the input into a padded tensor, the kernel is grown by a leading row and
    column of zeros, which makes the padding symmetric: the same sums, without the copy.
    Padding and weights reordered into oneDNN's blocked layout are worked out once per input shape, not on
    every call. A small 1×1 convolution (see SMALL_POINTWISE_MACS) runs as a matrix product over the
    channels-last pixels instead.
    """

    def __init__(self, conv: nn.Conv2d, silu: bool) -> None:
        super().__init__()
        weight = conv.weight.detach()
        self.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
        self.grown_weight = nn.Parameter(F.pad(weight, (1, 0, 1, 0)).contiguous(memory_format=torch.channels_last),
                                         requires_grad=False) if conv.stride[0] > 1 else None
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.kernel, self.stride, self.groups = conv.kernel_size[0], conv.stride[0], conv.groups
        self.strides = [self.stride] * 2
        self.silu = silu
        self.attr = "swish" if silu else "none"
        pointwise = self.kernel == 1 and self.stride == 1
        # the matrix product runs in float32 whatever the network's dtype: for these small products MKL's float32 call
        # costs a fraction of oneDNN's bfloat16 one
        self.matrix = nn.Parameter(pointwise_matrix(conv).float(), requires_grad=False) if pointwise else None
        self.matrix_bias = nn.Parameter(bias_or_zeros(conv).float(), requires_grad=False) if pointwise else None
        self._plans: dict[torch.Size, tuple] = {}

    @property
    def packed_shapes(self) -> list[tuple]:
        """The input shapes whose kernels are already chosen (and weights packed)."""
        return list(self._plans)

    def _plan(self, shape: torch.Size) -> tuple[tuple[int, ...] | None, list[int], torch.Tensor | None]:
        """For inputs of this shape: (explicit padding or None, the kernel's padding, the packed weight or
        None for a matrix product)."""
        small = SMALL_POINTWISE_MACS if self.weight.dtype == torch.float32 else SMALL_BFLOAT16_POINTWISE_MACS
        if self.matrix is not None and shape.numel() * self.matrix.shape[1] <= small:
            return None, [0, 0], None
        top, bottom, left, right = (*same_padding(shape[-2], self.kernel, self.stride),
                                    *same_padding(shape[-1], self.kernel, self.stride))
        weight, explicit = self.weight, None
        if (top, left) == (bottom - 1, right - 1) and self.grown_weight is not None:
            weight, top, left = self.grown_weight, bottom, right
        elif top != bottom or left != right:
            explicit, top, left = (left, right, top, bottom), 0, 0
            shape = (*shape[:-2], shape[-2] + explicit[2] + explicit[3], shape[-1] + explicit[0] + explicit[1])
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            weight, [top, left], self.strides, [1, 1], self.groups, list(shape))
        return explicit, [top, left], packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plans.get(x.shape)
        if plan is None:
            plan = self._plans[x.shape] = self._plan(x.shape)
        explicit, padding, weight = plan
        if weight is None:
            return self._matrix_product(x)
        if explicit is not None:
            x = F.pad(x, explicit)
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, self.bias, padding, self.strides, [1, 1], self.groups, self.attr, [], "")

    def _matrix_product(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        rows = pixel_rows(x).reshape(n * h * w, -1).float()
        out = torch.addmm(self.matrix_bias, rows, self.matrix)
        if self.silu:
            F.silu(out, inplace=True)
        return out.to(x.dtype).reshape(n, h, w, -1).permute(0, 3, 1, 2)


class GatedPointwiseConv(nn.Module):
    """conv(gate · x) for a 1×1 convolution and a gate per image and input channel, without writing gate · x:
    the gate scales the weights instead, and the convolution is one oneDNN linear per image over the channels-last
    pixels, with the bias and a residual, when given, added inside it (one rounding in bfloat16).

    Not a batched product (`baddbmm`): that first writes the bias or the residual into its output and reads it
    back, and it is MKL's, which picks its kernels by CPU vendor (slow on AMD CPUs; docs/benchmarks.md).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("only a plain 1×1 convolution can take a gate")
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)  # (C_out, C_in)
        self.bias = bias_or_zeros(conv)

    def forward(self, x: torch.Tensor, gate: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C_in, H, W), gate (N, C_in), residual (N, C_out, H, W) or None → (N, C_out, H, W) channels-last."""
        n, _, h, w = x.shape
        rows = pixel_rows(x)
        residual_rows = [None] * n if residual is None else pixel_rows(residual)
        images = [self._linear(rows[image], gate[image], residual_rows[image]) for image in range(n)]
        out = images[0].unsqueeze(0) if n == 1 else torch.stack(images)  # one image: no copy
        return out.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def _linear(self, rows: torch.Tensor, gate: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        weight = self.weight * gate
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise(rows, weight, self.bias, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(rows, residual, weight, self.bias, "add")


class SameConv2d(nn.Module):
    """A convolution padded like TensorFlow's "same"; the weights live in `.conv` as in the checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
        self.grown_weight: torch.Tensor | None = None

    @torch.no_grad()
    def fold_batch_norm(self, norm: nn.BatchNorm2d) -> None:
        """Make this convolution compute norm(conv(x)) with the norm's eval-mode statistics."""
        conv = self.conv
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)

    def fused(self, silu: bool = False) -> OneDNNConv2d:
        """This convolution (and the SiLU after it when `silu`) as one oneDNN kernel."""
        return OneDNNConv2d(self.conv, silu)

    def gated(self) -> GatedPointwiseConv:
        """This 1×1 convolution applied to per-channel gated inputs, the gate folded into its weights."""
        return GatedPointwiseConv(self.conv)

    def use_grown_kernel(self, on: bool = True) -> None:
        """Inference, after folding: where "same" padding is one pixel more after than before (a strided convolution
        of an even size), the kernel grown by a leading row and column of zeros and the padding made symmetric, as
        in `OneDNNConv2d`: the same sums, without copying the input into a padded tensor."""
        strided = self.conv.stride[0] > 1
        self.grown_weight = F.pad(self.conv.weight.detach(), (1, 0, 1, 0)) if on and strided else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        top, bottom, left, right = same_padding_2d(x, kernel, stride)
        if top == bottom and left == right:
            return F.conv2d(x, conv.weight, conv.bias, stride, (top, left), 1, conv.groups)
        if self.grown_weight is not None and (top, left) == (bottom - 1, right - 1):
            return F.conv2d(x, self.grown_weight, conv.bias, stride, (bottom, right), 1, conv.groups)
        return conv(F.pad(x, (left, right, top, bottom)))


class SameMaxPool2d(nn.Module):
    """3×3 stride-2 max pooling over a zero-padded input ("same" padding with zeros, not -inf)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self._last_window_floors: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = same_padding_2d(x, self.kernel_size, self.stride)
        if (top, left, bottom, right) == (0, 0, 1, 1) and min(x.shape[-2:]) >= self.kernel_size:
            # Even sizes: only the last window of each row and column reaches the one zero of padding after
            # the input, so pool without copying into a padded tensor (ceil_mode keeps that last window) and
            # let the zero count there instead: one maximum with 0 on the last row and column, -inf elsewhere.
            # The same values, one copy fewer.
            pooled = F.max_pool2d(x, self.kernel_size, self.stride, ceil_mode=True)
            return torch.maximum(pooled, self._last_window_floor(pooled))
        return F.max_pool2d(F.pad(x, (left, right, top, bottom)), self.kernel_size, self.stride)

    def _last_window_floor(self, pooled: torch.Tensor) -> torch.Tensor:
        # ints: while tracing, a shape's sizes are tensors, and the traced graph takes the cached floor as a constant
        key = (int(pooled.shape[-2]), int(pooled.shape[-1]), pooled.dtype, pooled.device)
        floor = self._last_window_floors.get(key)
        if floor is None:
            floor = torch.full(pooled.shape[-2:], float("-inf"), dtype=pooled.dtype, device=pooled.device)
            floor[-1, :] = 0
            floor[:, -1] = 0
            self._last_window_floors[key] = floor
        return floor


class SeparableConvBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1 convolution, optionally batch-normalised."""

    def __init__(self, in_channels: int, out_channels: int | None = None, norm: bool = True,
                 pointwise_groups: int = 1) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.depthwise_conv = SameConv2d(in_channels, in_channels, 3, groups=in_channels, bias=False)
        self.pointwise_conv = SameConv2d(in_channels, out_channels, 1, groups=pointwise_groups)
        self.bn = batch_norm(out_channels) if norm else nn.Identity()

    def fold_batch_norm(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.pointwise_conv.fold_batch_norm(self.bn)
            self.bn = nn.Identity()

    def use_fused_kernels(self, silu: bool = False) -> None:
        """Both convolutions as oneDNN kernels (batch norm folded first); `silu` fuses a SiLU after them."""
        if isinstance(self.bn, nn.BatchNorm2d):
            raise RuntimeError("fold the batch norm before fusing kernels")
        self.depthwise_conv = self.depthwise_conv.fused()
        self.pointwise_conv = self.pointwise_conv.fused(silu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))
