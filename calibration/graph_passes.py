"""Graph rewrites that make an FP32 ONNX quantize well on ONNX Runtime's CPU provider.

ConvTranspose -> Conv + DepthToSpace: ORT's CPU provider has no quantized ConvTranspose, so a
Q/DQ model keeps every ConvTranspose in float (dequantize, float deconvolution, quantize). A
transposed convolution with stride s is s*s ordinary convolutions, one per output phase
(output row y = s*m + r takes input rows m + d for the taps k with k = r + pad - s*d), so it is
rewritten as one Conv with s*s*C_out output channels followed by DepthToSpace(s), which ORT runs
as QLinearConv plus a byte shuffle. The result equals the original to float rounding (a test
checks several kernel/stride/padding combinations against ONNX Runtime).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of a ConvTranspose seen as s phase convolutions."""

    offsets: tuple[int, ...]  # d_min..d_max: input offsets read by any phase
    pad_begin: int
    pad_end: int
    crop_end: int  # outputs to drop at the end after DepthToSpace (output length not a multiple of s)


def _axis(kernel: int, stride: int, pad_begin: int, pad_end: int, output_padding: int) -> _Axis | None:
    """The phase-convolution geometry of one axis, or None when the offsets would need input cropping."""
    d_min = math.floor((pad_begin - (kernel - 1)) / stride)
    d_max = math.floor((stride - 1 + pad_begin) / stride)
    if d_min > 0:
        return None
    # Output length L = s*(n-1) + c; each phase yields M = n - 1 + ceil(c/s) positions.
    c = output_padding + kernel - pad_begin - pad_end
    if c <= 0:
        return None
    per_phase_extra = math.ceil(c / stride)
    conv_pad_end = per_phase_extra - 1 + d_max
    extra_outputs = max(0, -conv_pad_end)  # a negative pad would crop: compute more, slice later
    return _Axis(tuple(range(d_min, d_max + 1)), -d_min, max(0, conv_pad_end),
                 stride * (per_phase_extra + extra_outputs) - c)


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _geometry(node, weight_shape) -> tuple[int, list[_Axis]] | None:
    """(stride, per-axis geometry) for a rewritable 2-D ConvTranspose, else None."""
    attrs = _attributes(node)
    kernel = list(attrs.get("kernel_shape", weight_shape[2:]))
    strides = list(attrs.get("strides", [1, 1]))
    if len(kernel) != 2 or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return None
    if "output_shape" in attrs or strides[0] != strides[1] or strides[0] < 2:
        return None
    output_padding = list(attrs.get("output_padding", [0, 0]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    stride = strides[0]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # Output = input * stride: total padding = output_padding + kernel - stride on each axis.
        totals = [output_padding[i] + kernel[i] - stride for i in range(2)]
        if any(t < 0 for t in totals):
            return None
        small = [t // 2 for t in totals]
        pads = (small + [t - s for t, s in zip(totals, small)]) if auto_pad == "SAME_UPPER" \
            else ([t - s for t, s in zip(totals, small)] + small)
    elif auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
    else:
        return None
    axes = [_axis(kernel[i], stride, pads[i], pads[i + 2], output_padding[i]) for i in range(2)]
    if any(a is None for a in axes):
        return None
    return stride, axes  # type: ignore[return-value]


def phase_conv_weights(weight: np.ndarray, bias: np.ndarray | None, stride: int, pads_begin: tuple[int, int],
                       axes: list[_Axis]) -> tuple[np.ndarray, np.ndarray]:
    """ConvTranspose weights (C_in, C_out, kH, kW) -> Conv weights (s*s*C_out, C_in, K'h, K'w), DCR order."""
    c_in, c_out, k_h, k_w = weight.shape
    oy, ox = axes
    out = np.zeros((stride * stride * c_out, c_in, len(oy.offsets), len(ox.offsets)), weight.dtype)
    for ry in range(stride):
        for rx in range(stride):
            block = (ry * stride + rx) * c_out
            for iy, dy in enumerate(oy.offsets):
                ky = ry + pads_begin[0] - stride * dy
                if not 0 <= ky < k_h:
                    continue
                for ix, dx in enumerate(ox.offsets):
                    kx = rx + pads_begin[1] - stride * dx
                    if 0 <= kx < k_w:
                        out[block : block + c_out, :, iy, ix] = weight[:, :, ky, kx].T
    phase_bias = np.tile(bias if bias is not None else np.zeros(c_out, weight.dtype), stride * stride)
    return out, phase_bias.astype(weight.dtype)


def _pads_begin(node, weight_shape, stride: int) -> tuple[int, int]:
    """The begin pads actually used (explicit or from SAME_*), matching `_geometry`."""
    attrs = _attributes(node)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        kernel = list(attrs.get("kernel_shape", weight_shape[2:]))
        output_padding = list(attrs.get("output_padding", [0, 0]))
        totals = [output_padding[i] + kernel[i] - stride for i in range(2)]
        return tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals)  # type: ignore[return-value]
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return pads[0], pads[1]


def rewrite_conv_transpose(model) -> list[str]:
    """Replace every rewritable ConvTranspose (weights as initializers) in place; returns their names."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    rewritten = []
    new_nodes = []
    for node in graph.node:
        weight_init = inits.get(node.input[1]) if node.op_type == "ConvTranspose" and len(node.input) > 1 else None
        geometry = _geometry(node, list(weight_init.dims)) if weight_init is not None else None
        bias_init = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if geometry is None or (len(node.input) > 2 and node.input[2] and bias_init is None):
            new_nodes.append(node)
            continue
        stride, axes = geometry
        weight = numpy_helper.to_array(weight_init)
        bias = numpy_helper.to_array(bias_init) if bias_init is not None else None
        conv_w, conv_b = phase_conv_weights(weight, bias, stride, _pads_begin(node, weight.shape, stride), axes)
        name = node.name or node.output[0]
        w_name, b_name = f"{name}_phase_weight", f"{name}_phase_bias"
        graph.initializer.extend([numpy_helper.from_array(conv_w, w_name), numpy_helper.from_array(conv_b, b_name)])
        phases, shuffled = f"{name}_phases", f"{name}_shuffled"
        crop = any(a.crop_end for a in axes)
        new_nodes.append(helper.make_node(
            "Conv", [node.input[0], w_name, b_name], [phases], name=f"{name}_phase_conv",
            kernel_shape=[len(axes[0].offsets), len(axes[1].offsets)],
            pads=[axes[0].pad_begin, axes[1].pad_begin, axes[0].pad_end, axes[1].pad_end]))
        new_nodes.append(helper.make_node("DepthToSpace", [phases], [shuffled if crop else node.output[0]],
                                          name=f"{name}_depth_to_space", blocksize=stride, mode="DCR"))
        if crop:
            new_nodes.extend(_crop_nodes(graph, name, shuffled, node.output[0], axes))
        rewritten.append(name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [init for init in graph.initializer if init.name in used or init.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def _crop_nodes(graph, name: str, source: str, target: str, axes: list[_Axis]) -> list:
    """A Slice that drops the surplus outputs at the end of each spatial axis (ends counted from the end)."""
    from onnx import helper, numpy_helper

    big = np.iinfo(np.int64).max
    starts = numpy_helper.from_array(np.array([0, 0], np.int64), f"{name}_crop_starts")
    ends = numpy_helper.from_array(np.array([-a.crop_end if a.crop_end else big for a in axes], np.int64), f"{name}_crop_ends")
    slice_axes = numpy_helper.from_array(np.array([2, 3], np.int64), f"{name}_crop_axes")
    graph.initializer.extend([starts, ends, slice_axes])
    return [helper.make_node("Slice", [source, starts.name, ends.name, slice_axes.name], [target], name=f"{name}_crop")]
