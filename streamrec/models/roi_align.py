"""RoIAlign (He et al., Mask R-CNN) with adaptive sampling, as torchvision's ``roi_align`` computes
it, in plain PyTorch, and exported as ONNX's ``RoiAlign``.

Each region is divided into ``output_size`` x ``output_size`` bins; a bin averages a grid of
bilinear samples, ``ceil(region size / output_size)`` per side (``sampling_ratio`` 0). ``aligned``
shifts the scaled coordinates by half a pixel, so that a pixel's centre is at +0.5 (detectron2's
and PySlowFast's default); without it a region is at least one feature pixel wide. A sample more
than one pixel outside the map reads zero; one within a pixel of it reads the edge. A region
with an empty grid (a box of zero width with ``aligned``) reads zero.

Bilinear sampling is separable, and so is the rule that zeroes samples outside the map, so a
bin's average is ``Ay @ features @ Ax.T`` with one weight matrix per axis; this needs no
torchvision (the engines' environment has none) and stays differentiable for training.

In an ONNX export the op is one ``RoiAlign`` node (opset 16): ``coordinate_transformation_mode``
``half_pixel`` for ``aligned`` (the input coordinates shifted by -0.5, as torchvision's own ONNX
symbolic maps ``aligned=True``) and ``output_half_pixel`` without; ``sampling_ratio`` 0 and
``mode`` ``avg`` are written out, because TensorRT's ONNX parser reads a missing
``sampling_ratio`` as 1, not ONNX's 0.
"""

from __future__ import annotations

import warnings

import torch


def roi_align(features: torch.Tensor, regions: torch.Tensor, batch_indices: torch.Tensor, *, output_size: int,
              spatial_scale: float, aligned: bool) -> torch.Tensor:
    """Features ``[B, C, H, W]`` pooled in ``regions`` ``[N, 4]`` (x1, y1, x2, y2 in input pixels) of
    the maps ``batch_indices`` ``[N]`` (int64) names: ``[N, C, output_size, output_size]``."""
    if torch.onnx.is_in_onnx_export():
        return _ExportedRoIAlign.apply(features, regions, batch_indices, output_size, spatial_scale, aligned)
    return _roi_align(features, regions, batch_indices, output_size, spatial_scale, aligned)


def _roi_align(features: torch.Tensor, regions: torch.Tensor, batch_indices: torch.Tensor, output_size: int,
               spatial_scale: float, aligned: bool) -> torch.Tensor:
    count, channels, height, width = regions.shape[0], *features.shape[1:]
    if count == 0:
        return features.new_zeros((0, channels, output_size, output_size))
    regions = regions.to(features.dtype)
    offset = 0.5 if aligned else 0.0
    start = regions[:, :2] * spatial_scale - offset  # (x, y)
    size = regions[:, 2:] * spatial_scale - offset - start
    if not aligned:
        size = size.clamp(min=1.0)
    bin_size = size / output_size
    grid = torch.ceil(size / output_size)  # samples per bin side, per axis (adaptive sampling)
    most = max(int(grid.max()), 1)
    rows = _axis_weights(start[:, 1], bin_size[:, 1], grid[:, 1], height, output_size, most)  # N, P, H
    columns = _axis_weights(start[:, 0], bin_size[:, 0], grid[:, 0], width, output_size, most)  # N, P, W
    samples = (grid[:, 0] * grid[:, 1]).clamp(min=1.0).view(-1, 1, 1, 1)
    maps = features[batch_indices]  # N, C, H, W
    pooled = rows.unsqueeze(1) @ maps @ columns.unsqueeze(1).transpose(2, 3)  # N, C, P, P
    return pooled / samples


def _axis_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, length: int, output_size: int,
                  most: int) -> torch.Tensor:
    """``[N, output_size, length]``: for each region and bin, the summed bilinear weight of every
    map row (or column) over the bin's samples along this axis (the first ``grid`` of ``most``)."""
    bins = torch.arange(output_size, dtype=start.dtype, device=start.device).view(1, -1, 1)
    steps = torch.arange(most, dtype=start.dtype, device=start.device).view(1, 1, -1)
    start, bin_size, grid = start.view(-1, 1, 1), bin_size.view(-1, 1, 1), grid.view(-1, 1, 1)
    # N, P, G, in torchvision's order of operations; a grid of 0 (an empty region) has no samples
    coordinate = start + bins * bin_size + (steps + 0.5) * bin_size / grid.clamp(min=1.0)
    used = (steps < grid) & (coordinate >= -1.0) & (coordinate <= length)
    coordinate = coordinate.clamp(min=0.0)
    low = coordinate.floor()
    at_edge = low >= length - 1
    low = torch.where(at_edge, torch.full_like(low, length - 1), low)
    high = torch.where(at_edge, low, low + 1)
    fraction = torch.where(at_edge, torch.zeros_like(coordinate), coordinate - low) * used
    weights = torch.zeros((*coordinate.shape[:2], length), dtype=start.dtype, device=start.device)
    weights.scatter_add_(2, low.long(), used.to(start.dtype) - fraction)
    weights.scatter_add_(2, high.long(), fraction)
    return weights


class _ExportedRoIAlign(torch.autograd.Function):
    """`roi_align` as the ONNX exporter sees it: one ``RoiAlign`` node (see the module docstring)."""

    @staticmethod
    def forward(ctx, features, regions, batch_indices, output_size, spatial_scale, aligned):  # noqa: ANN001
        with warnings.catch_warnings():  # the graph holds `symbolic`'s node: these sizes never reach it
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return _roi_align(features, regions, batch_indices, output_size, spatial_scale, aligned)

    @staticmethod
    def symbolic(g, features, regions, batch_indices, output_size, spatial_scale, aligned):  # noqa: ANN001
        return g.op("RoiAlign", features, regions, batch_indices,
                    coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
                    mode_s="avg", output_height_i=output_size, output_width_i=output_size, sampling_ratio_i=0,
                    spatial_scale_f=spatial_scale)
