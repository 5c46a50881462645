"""Shared frames and layers: padding, windows, position bias, stage convs, the two frames' wiring."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from irformers.models.frames import ColumnarFrame, StageSpec, UNetFrame
from irformers.models.layers import (
    BayerBilinear,
    ContinuousPositionBias,
    DropPath,
    Mlp,
    make_stage_conv,
    pad_to_multiple,
    relative_coords_table,
    relative_position_index,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize(("h", "w", "m"), [(5, 7, 4), (3, 2, 8), (1, 6, 4), (8, 8, 8), (13, 4, 32)])
def test_pad_to_multiple_matches_numpy_reflect(h, w, m):
    x = torch.randn(2, 3, h, w)
    out = pad_to_multiple(x, m)
    hp, wp = -(-h // m) * m, -(-w // m) * m
    mode = "reflect"
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (0, hp - h), (0, wp - w)), mode=mode)
    if h == 1:  # a single row cannot be reflected; it is repeated
        ref = np.pad(
            np.pad(x.numpy(), ((0, 0), (0, 0), (0, hp - h), (0, 0)), mode="edge"),
            ((0, 0), (0, 0), (0, 0), (0, wp - w)),
            mode=mode,
        )
    np.testing.assert_array_equal(out.numpy(), ref)
    # channels-last gives the same pixels
    cl = pad_to_multiple(x.permute(0, 2, 3, 1), m, channels_last=True)
    np.testing.assert_array_equal(cl.permute(0, 3, 1, 2).numpy(), ref)


def test_pad_to_multiple_no_copy_when_aligned():
    x = torch.randn(1, 1, 8, 16)
    assert pad_to_multiple(x, 8) is x


def test_window_partition_order_and_roundtrip():
    x = torch.arange(2 * 4 * 6 * 1, dtype=torch.float32).view(2, 4, 6, 1)
    win = window_partition(x, (2, 3))
    assert win.shape == (2 * 2 * 2, 6, 1)
    # second window of the first image: rows 0-1, columns 3-5, raster order inside
    expected = [x[0, r, c, 0].item() for r in range(2) for c in range(3, 6)]
    assert win[1, :, 0].tolist() == expected
    assert torch.equal(window_reverse(win, (2, 3), 4, 6), x)


def test_relative_coords_table_values():
    table = relative_coords_table((2, 3))
    assert table.shape == (3 * 5, 2)
    # offsets -1..1 (rows) scaled by 8 / 1, offsets -2..2 (cols) scaled by 8 / 2
    row = lambda off: math.copysign(math.log2(abs(off) + 1) / 3, off)  # noqa: E731
    assert table[0].tolist() == pytest.approx([row(-8), row(-8)])
    assert table[7].tolist() == pytest.approx([0.0, 0.0])  # centre entry: zero offset
    assert table[8].tolist() == pytest.approx([0.0, row(4)])
    assert relative_coords_table((1, 1)).tolist() == [[0.0, 0.0]]
    # made once per device and kept there: copied from the CPU per layer and step, it stalled a GPU
    meta = torch.device("meta")
    assert relative_coords_table((2, 3), meta).device == meta
    assert relative_coords_table((2, 3), meta) is relative_coords_table((2, 3), meta)


def test_relative_position_index_brute_force():
    h, w = 3, 4
    idx = relative_position_index((h, w))
    pos = [(y, x) for y in range(h) for x in range(w)]
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            assert idx[i, j] == (yi - yj + h - 1) * (2 * w - 1) + (xi - xj + w - 1)


def test_continuous_position_bias_shape_range_and_params():
    cpb = ContinuousPositionBias(num_heads=4)
    bias = cpb((5, 3))
    assert bias.shape == (4, 9 * 5)
    assert bool((bias > 0).all() and (bias < 16).all())
    assert sum(p.numel() for p in cpb.parameters()) == 2 * 512 + 512 + 512 * 4


def test_position_bias_follows_its_weights_however_they_change():
    """A table cached per window at inference outlived weights changed without moving their version
    counters: outputs off by 0.015 after `p.data.copy_`, and for a deepcopy given other weights."""
    torch.manual_seed(0)
    a, b = ContinuousPositionBias(2, hidden=16), ContinuousPositionBias(2, hidden=16)
    with torch.no_grad():
        a((4, 4))
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            pa.data.copy_(pb.data)
        assert torch.equal(a((4, 4)), b((4, 4)))
        c = ContinuousPositionBias(2, hidden=16)
        c((4, 4))
        d = copy.deepcopy(c)
        d.load_state_dict(ContinuousPositionBias(2, hidden=16).state_dict())
        assert not torch.equal(d((4, 4)), c((4, 4)))


def test_mlp_and_droppath():
    mlp = Mlp(6, ratio=2)
    assert sum(p.numel() for p in mlp.parameters()) == 6 * 12 + 12 + 12 * 6 + 6
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 2)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert bool((per_sample == per_sample[:, :1]).all())  # whole samples dropped or kept


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("conv1", 9 * 16 * 16 + 16),
        ("conv3", 9 * 16 * 4 + 4 + 4 * 4 + 4 + 9 * 4 * 16 + 16),
        ("linear", 16 * 16 + 16),
    ],
)
def test_make_stage_conv(kind, params):
    conv = make_stage_conv(kind, 16)
    assert sum(p.numel() for p in conv.parameters()) == params
    assert conv(torch.randn(2, 5, 7, 16)).shape == (2, 5, 7, 16)


def test_make_stage_conv_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind"):
        make_stage_conv("conv2", 8)


def test_conv1_stage_conv_is_a_channels_last_conv():
    conv = make_stage_conv("conv1", 4)
    x = torch.randn(1, 6, 5, 4)
    ref = nn.functional.conv2d(x.permute(0, 3, 1, 2), conv.body.weight, conv.body.bias, padding=1)
    torch.testing.assert_close(conv(x), ref.permute(0, 2, 3, 1))


class Recorder(nn.Module):
    """A stage that records what it sees and adds a constant per channel (so it is not the identity)."""

    def __init__(self, spec: StageSpec, log: list) -> None:
        super().__init__()
        self.spec = spec
        self.log = log
        self.delta = nn.Parameter(torch.zeros(spec.dim))

    def forward(self, x, **runtime):
        self.log.append((self.spec, tuple(x.shape), runtime))
        return x + self.delta


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_columnar_frame_shapes_padding_runtime(scale):
    log: list = []
    frame = ColumnarFrame(
        lambda s: Recorder(s, log), dim=8, depths=[2, 3], num_heads=[1, 2], scale=scale, size_multiple=8
    )
    x = torch.rand(2, 3, 13, 10)
    out = frame(x, k=5)
    assert out.shape == (2, 3, 13 * scale, 10 * scale)
    assert [(s.index, s.depth, s.num_heads, s.level) for s, _, _ in log] == [(0, 2, 1, 0), (1, 3, 2, 0)]
    assert all(shape == (2, 16, 16, 8) and rt == {"k": 5} for _, shape, rt in log)


def test_columnar_frame_parameter_count():
    dim, f = 16, 64
    frame = ColumnarFrame(
        lambda s: Recorder(s, []), dim=dim, depths=[1], num_heads=1, scale=3, size_multiple=8
    )
    convs = (
        (3 * dim * 9 + dim)
        + (dim * dim * 9 + dim)
        + (dim * f * 9 + f)
        + (f * 9 * f * 9 + 9 * f)
        + (f * 3 * 9 + 3)
    )
    assert sum(p.numel() for p in frame.parameters()) == convs + 2 * 2 * dim + dim  # 2 LayerNorms + Recorder


def test_columnar_frame_mean_shift_is_exact():
    frame = ColumnarFrame(lambda s: Recorder(s, []), dim=8, depths=[1], num_heads=1, scale=1, size_multiple=4)
    for p in frame.parameters():
        nn.init.zeros_(p)
    for m in frame.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
    x = torch.rand(1, 3, 6, 6)
    out = frame(x)  # every conv is zero: output = the RGB mean added back
    torch.testing.assert_close(out, torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1).expand_as(out))


def test_unet_frame_levels_and_residual():
    log: list = []
    frame = UNetFrame(
        lambda s: Recorder(s, log),
        in_channels=3,
        out_channels=3,
        dims=[8, 16, 32, 32],
        depths=[1, 2, 3, 4],
        decoder_depths=[5, 6, 7],
        num_heads=[1, 2, 4, 4],
        refinement_depth=8,
        size_multiple=8,
    )
    x = torch.rand(2, 3, 21, 14)
    nn.init.zeros_(frame.output.weight)
    nn.init.zeros_(frame.output.bias)
    out = frame(x, k=3)
    torch.testing.assert_close(out, x)  # zero prediction: the global residual returns the input
    seen = [(s.index, s.level, s.depth, s.dim, shape) for s, shape, _ in log]
    assert seen == [
        (0, 0, 1, 8, (2, 24, 16, 8)),
        (1, 1, 2, 16, (2, 12, 8, 16)),
        (2, 2, 3, 32, (2, 6, 4, 32)),
        (3, 3, 4, 32, (2, 3, 2, 32)),
        (4, 2, 7, 32, (2, 6, 4, 32)),
        (5, 1, 6, 16, (2, 12, 8, 16)),
        (6, 0, 5, 8, (2, 24, 16, 8)),
        (7, 0, 8, 8, (2, 24, 16, 8)),
    ]
    assert all(rt == {"k": 3} for _, _, rt in log)


def test_unet_frame_gray_to_gray_and_bad_dims():
    frame = UNetFrame(
        lambda s: Recorder(s, []),
        in_channels=1,
        out_channels=1,
        dims=[4, 8, 8, 8],
        depths=[1] * 4,
        decoder_depths=[1] * 3,
        num_heads=[1] * 4,
        refinement_depth=1,
        size_multiple=16,
    )
    assert frame(torch.rand(1, 1, 9, 17)).shape == (1, 1, 9, 17)
    with pytest.raises(ValueError, match="multiples of 4"):
        UNetFrame(
            lambda s: Recorder(s, []),
            in_channels=1,
            out_channels=1,
            dims=[4, 6, 8, 8],
            depths=[1] * 4,
            decoder_depths=[1] * 3,
            num_heads=[1] * 4,
            refinement_depth=1,
            size_multiple=8,
        )


def test_bayer_bilinear_reconstructs_flat_colour_and_keeps_samples():
    rgb = torch.tensor([0.2, 0.5, 0.9])
    h, w = 6, 8
    mosaic = torch.empty(1, 1, h, w)
    for y in range(h):
        for x in range(w):
            mosaic[0, 0, y, x] = (
                rgb[0] if y % 2 == 0 and x % 2 == 0 else rgb[2] if y % 2 and x % 2 else rgb[1]
            )
    out = BayerBilinear()(mosaic)
    torch.testing.assert_close(out, rgb.view(1, 3, 1, 1).expand(1, 3, h, w))
    # a random mosaic keeps its sampled values in their channel
    m = torch.rand(1, 1, h, w)
    out = BayerBilinear()(m)
    torch.testing.assert_close(out[0, 0, ::2, ::2], m[0, 0, ::2, ::2])
    torch.testing.assert_close(out[0, 1, ::2, 1::2], m[0, 0, ::2, 1::2])
    torch.testing.assert_close(out[0, 2, 1::2, 1::2], m[0, 0, 1::2, 1::2])
    # interior green at a red site: mean of its 4 neighbours
    torch.testing.assert_close(
        out[0, 1, 2, 2], (m[0, 0, 1, 2] + m[0, 0, 3, 2] + m[0, 0, 2, 1] + m[0, 0, 2, 3]) / 4
    )
