"""Hi-IR: groupings checked by pixel coordinates, attention variants, stage, presets and sizes."""

import pytest
import torch
import torch.nn.functional as F

from irformers.models import PRESETS, baseline, build_model, count_params, hiir, list_presets
from irformers.models.layers import window_partition, window_reverse


def _coords(b: int, h: int, w: int) -> torch.Tensor:
    """(B, H, W, 3) image whose pixels hold (batch, row, col): groups can be read back as coordinates."""
    bb, ii, jj = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([bb, ii, jj], dim=-1)


def _group_sets(x: torch.Tensor, level: int, **kw) -> list[set[tuple[int, int, int]]]:
    pieces = hiir.plan(level, x.shape[1], x.shape[2], **kw)
    return [{tuple(t.tolist()) for t in g} for groups in hiir.group_pieces(x, pieces) for g in groups]


def _assert_partition(sets: list[set], b: int, h: int, w: int) -> None:
    seen = [p for s in sets for p in s]
    assert len(seen) == len(set(seen)) == b * h * w  # every pixel exactly once


@pytest.mark.parametrize(
    ("level", "shape", "kw"),
    [
        (1, (2, 16, 24), dict(window=4, region=8)),
        (2, (2, 16, 24), dict(window=4, region=8)),
        (2, (1, 16, 32), dict(window=4, region=16, permute=False)),
        (2, (1, 32, 32), dict(window=2, region=16, permute=False)),  # 64-pixel groups: 4 rows of 16
        (3, (2, 40, 24), dict(window=4, region=8, l3_max_regions=2)),  # 5 x 3 regions, blocks of <= 2 x 2
        (3, (1, 16, 16), dict(window=4, region=8)),
    ],
)
def test_group_then_ungroup_is_identity(level, shape, kw):
    x = torch.randn(*shape, 6)
    pieces = hiir.plan(level, shape[1], shape[2], **kw)
    groups = hiir.group_pieces(x, pieces)
    assert torch.equal(hiir.ungroup_pieces(groups, pieces, shape[0]), x)
    # attention's per-head layout (groups, heads, n, C / heads), as scaled_dot_product_attention returns it
    per_head = [g.reshape(g.shape[0], g.shape[1], 3, 2).transpose(1, 2) for g in groups]
    assert torch.equal(hiir.ungroup_pieces(per_head, pieces, shape[0]), x)


def test_l1_groups_are_windows():
    p = 4
    sets = _group_sets(_coords(2, 8, 16), 1, window=p, region=8)
    _assert_partition(sets, 2, 8, 16)
    for s in sets:
        b, i, j = min(s)
        assert s == {(b, i + a1, j + a2) for a1 in range(p) for a2 in range(p)}
        assert i % p == 0 and j % p == 0


def test_l2_group_is_same_in_window_offset_of_its_region():
    p, P = 4, 16
    sets = _group_sets(_coords(2, 32, 48), 2, window=p, region=P)
    _assert_partition(sets, 2, 32, 48)
    for s in sets:
        b, i, j = next(iter(s))
        top, left = i // P * P, j // P * P
        expected = {
            (b, top + k * p + i % p, left + l * p + j % p) for k in range(P // p) for l in range(P // p)
        }
        assert s == expected


def test_l2_without_permutation_groups_consecutive_pixels():
    p, P = 4, 16  # (P/p)^2 = 16 consecutive pixels of a row
    sets = _group_sets(_coords(1, 16, 32), 2, window=p, region=P, permute=False)
    _assert_partition(sets, 1, 16, 32)
    for s in sets:
        b, i, j = min(s)
        assert j % 16 == 0 and s == {(b, i, j + t) for t in range(16)}


def test_l3_groups_same_in_region_offset_in_blocks_of_regions():
    P = 8
    # 5 x 3 regions with blocks of at most 2 x 2 regions: rows cut 2 + 2 + 1, columns 2 + 1 (by hand).
    row_blocks, col_blocks = [[0, 1], [2, 3], [4]], [[0, 1], [2]]
    sets = _group_sets(_coords(2, 5 * P, 3 * P), 3, window=4, region=P, l3_max_regions=2)
    _assert_partition(sets, 2, 5 * P, 3 * P)
    expected = {
        frozenset((b, R * P + o1, C * P + o2) for R in rb for C in cb)
        for b in range(2)
        for rb in row_blocks
        for cb in col_blocks
        for o1 in range(P)
        for o2 in range(P)
    }
    assert {frozenset(s) for s in sets} == expected


def test_l3_single_block_when_regions_fit():
    P = 8
    sets = _group_sets(_coords(1, 3 * P, 2 * P), 3, window=4, region=P)
    assert len(sets) == P * P
    for s in sets:
        b, i, j = next(iter(s))
        assert s == {(b, R * P + i % P, C * P + j % P) for R in range(3) for C in range(2)}


def test_l3_blocks_are_balanced():
    pieces = hiir.plan(3, 17 * 4, 16 * 4, window=2, region=4, l3_max_regions=16)
    assert sorted({p.size for p in pieces}) == [(8, 16), (9, 16)]  # 17 regions -> 9 + 8, not 16 + 1


def test_plan_rejects_sizes_off_the_region():
    with pytest.raises(ValueError, match="multiple of the region"):
        hiir.plan(1, 20, 16, window=4, region=8)


# ----------------------------------------------------------------------------------------------------
# Attention: the math against a hand-written reference, and what each level lets a pixel reach
# ----------------------------------------------------------------------------------------------------


def _reference_attention(attn: hiir.LevelAttention, x: torch.Tensor, groups) -> torch.Tensor:
    """Loop-based attention: `groups` lists, per group, its pixels as (row, col, grid_y, grid_x)."""
    heads, dq = attn.num_heads, attn.qk_dim // attn.num_heads
    dv = attn.dim // heads
    t = x[0] @ attn.qkv.weight.T + attn.qkv.bias
    out = torch.zeros_like(x[0])
    for members in groups:
        rows = torch.tensor([m[0] for m in members])
        cols = torch.tensor([m[1] for m in members])
        grid = torch.tensor([[m[2], m[3]] for m in members], dtype=torch.float32)
        gh, gw = int(grid[:, 0].max()) + 1, int(grid[:, 1].max()) + 1
        rel = (grid[:, None] - grid[None]) / torch.tensor([max(gh - 1, 1), max(gw - 1, 1)]) * 8
        rel = torch.sign(rel) * torch.log2(rel.abs() + 1) / 3
        bias = 16 * torch.sigmoid(attn.position_bias.mlp(rel))  # (n, n, heads)
        tok = t[rows, cols]
        for h in range(heads):
            q = tok[:, h * dq : (h + 1) * dq]
            k = tok[:, attn.qk_dim + h * dq : attn.qk_dim + (h + 1) * dq]
            v = tok[:, 2 * attn.qk_dim + h * dv : 2 * attn.qk_dim + (h + 1) * dv]
            w = torch.softmax(q @ k.T / dq**0.5 + bias[..., h], dim=-1)
            out[rows, cols, h * dv : (h + 1) * dv] = w @ v
    return out[None]


# 16-token groups: 0 sends them through the fused SDPA kernel, 16 through the small-group matmuls
@pytest.mark.parametrize("small_group_tokens", [0, 16])
def test_l1_attention_matches_reference(small_group_tokens, monkeypatch):
    monkeypatch.setattr(hiir, "SMALL_GROUP_TOKENS", small_group_tokens)
    torch.manual_seed(0)
    p = 4
    attn = hiir.LevelAttention(12, 2, 1, qk_dim=6, window=p, region=8)
    x = torch.randn(1, 8, 16, 12)
    groups = [
        [(wi + a, wj + b, a, b) for a in range(p) for b in range(p)]
        for wi in range(0, 8, p)
        for wj in range(0, 16, p)
    ]
    torch.testing.assert_close(attn(x), _reference_attention(attn, x, groups), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("small_group_tokens", [0, 16])
def test_l2_attention_matches_reference(small_group_tokens, monkeypatch):
    monkeypatch.setattr(hiir, "SMALL_GROUP_TOKENS", small_group_tokens)
    torch.manual_seed(0)
    p, P = 2, 8  # L2 groups: 4 x 4 windows, position = window index inside the region
    attn = hiir.LevelAttention(8, 2, 2, qk_dim=4, window=p, region=P)
    x = torch.randn(1, 8, 16, 8)
    groups = [
        [(ri + k * p + o1, rj + l * p + o2, k, l) for k in range(P // p) for l in range(P // p)]
        for ri in range(0, 8, P)
        for rj in range(0, 16, P)
        for o1 in range(p)
        for o2 in range(p)
    ]
    torch.testing.assert_close(attn(x), _reference_attention(attn, x, groups), atol=1e-5, rtol=1e-4)


def _reach(module, x: torch.Tensor, i: int, j: int) -> set[tuple[int, int]]:
    """Pixels whose output changes when pixel (i, j) of the input changes."""
    with torch.no_grad():
        y0 = module(x)
        x2 = x.clone()
        x2[0, i, j] += 1.0
        diff = (module(x2) - y0).abs().amax(-1)[0]
    return {tuple(t) for t in (diff > 1e-6).nonzero().tolist()}


def _box(r0: int, r1: int, c0: int, c1: int) -> set[tuple[int, int]]:
    return {(r, c) for r in range(r0, r1) for c in range(c0, c1)}


P_, p_ = 4, 2  # region and window of the receptive-field tests: the image is 12 x 8, 3 x 2 regions


def _attention(version: int = 3, layer: int = 0, use_l3: bool = True, **kw) -> hiir.HiAttention:
    torch.manual_seed(0)
    segments = hiir.attention_segments(version, layer, use_l3)
    return hiir.HiAttention(8, 2, segments, window=p_, region=P_, **kw)


def test_one_layer_reaches_its_region_without_l3():
    x = torch.randn(1, 12, 8, 8)
    assert _reach(_attention(use_l3=False), x, 5, 6) == _box(4, 8, 4, 8)


def test_l3_reaches_every_region_of_the_block():
    x = torch.randn(1, 12, 8, 8)
    assert _reach(_attention(), x, 5, 6) == _box(0, 12, 0, 8)  # 3 x 2 regions: one block
    # blocks of at most 2 x 2 regions: rows of regions cut 2 + 1, so region row 2 is its own block
    assert _reach(_attention(l3_max_regions=2), x, 5, 6) == _box(0, 8, 0, 8)
    assert _reach(_attention(l3_max_regions=2), x, 9, 1) == _box(8, 12, 0, 8)


def test_version_1_alternates_l1_and_l2():
    x = torch.randn(1, 12, 8, 8)
    assert _reach(_attention(1, 0, use_l3=False), x, 5, 6) == _box(4, 6, 6, 8)  # its 2 x 2 window
    # odd layer: L2 only, the pixels at the same in-window offset (1, 0) of the region
    assert _reach(_attention(1, 1, use_l3=False), x, 5, 6) == {(5, 4), (5, 6), (7, 4), (7, 6)}
    layer0 = _attention(1, 0)
    assert [[lv.level for lv in seg] for seg in layer0.segments] == [[1, 3]]
    assert layer0.segments[0][0].qk_dim == 8 and layer0.segments[0][1].qk_dim == 4


def test_version_2_projects_between_l1_and_l2():
    attn = _attention(2)
    assert [[lv.level for lv in seg] for seg in attn.segments] == [[1], [2, 3]]
    assert len(attn.projs) == 2
    assert _reach(_attention(2, use_l3=False), torch.randn(1, 12, 8, 8), 5, 6) == _box(4, 8, 4, 8)


def test_no_permutation_stays_local():
    reach = _reach(_attention(use_l3=False, permute=False), torch.randn(1, 12, 8, 8), 5, 6)
    # L1: the 2 x 2 window; L2 without permutation: 4 consecutive pixels of a row of the region
    assert reach == _box(4, 6, 4, 8)


@pytest.mark.parametrize(
    "options", [dict(attn_type="cosine"), dict(norm="pre"), dict(version=1), dict(version=2)]
)
def test_layer_options_train(options):
    torch.manual_seed(0)
    stage = hiir.HiIRStage(16, 2, 2, window=2, region=4, stage_conv="linear", **options)
    x = torch.randn(2, 6, 10, 16, requires_grad=True)  # not a multiple of the region: padded inside
    y = stage(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, param in stage.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    if options.get("attn_type") == "cosine":
        assert stage.layers[0].attn.segments[0][0].logit_scale.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "options",
    [dict(), dict(norm="pre"), dict(version=1), dict(version=2), dict(use_l3=False), dict(l3_max_regions=2)],
)
def test_cpu_inference_by_tiles_matches_the_whole_image(options, monkeypatch):
    monkeypatch.setattr(hiir, "TILE_TOKENS", 8 * 8)  # tiles of 2 x 2 regions on a 3 x 5 region image
    torch.manual_seed(0)
    stage = hiir.HiIRStage(16, 2, 2, window=2, region=4, stage_conv="linear", **options).eval()
    x = torch.randn(2, 12, 20, 16)
    whole = stage(x)  # autograd on: the whole-image path
    tiles, by_tiles = [], hiir.by_tiles
    monkeypatch.setattr(hiir, "by_tiles", lambda *a: tiles.append(1) or by_tiles(*a))
    bands, forward = [], hiir.LevelAttention.forward
    monkeypatch.setattr(
        hiir.LevelAttention, "forward", lambda m, t, rows=None: bands.append(rows) or forward(m, t, rows)
    )
    with torch.no_grad():
        tiled = stage(x)
    assert len(tiles) == 2 * (2 if options.get("use_l3", True) else 1)  # local runs around each L3
    # L3 in bands of one row of every region (64 tokens of 240): 4 bands per layer
    assert [r for r in bands if r is not None] == ([1] * 8 if options.get("use_l3", True) else [])
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="version"):
        hiir.attention_segments(4)
    with pytest.raises(ValueError, match="attn_type"):
        hiir.LevelAttention(8, 2, 1, qk_dim=4, window=2, region=4, attn_type="l2")
    with pytest.raises(ValueError, match="unknown keys"):
        hiir.build({"arch": "hiir", "windw_size": 8})
    with pytest.raises(ValueError, match="region_size 32 must be a multiple of window_size 7"):
        build_model("hiir-t-sr-x2", window_size=7)  # built, then every forward failed
    with pytest.raises(ValueError, match="unet layout restores at scale 1, got scale 2"):
        build_model("hiir-t-denoise-gray", scale=2)  # built, and the config said x2 while it ran x1


# ----------------------------------------------------------------------------------------------------
# Presets and networks
# ----------------------------------------------------------------------------------------------------

REPORTED = [p for p in hiir.PRESETS if p.reported_params_m is not None]


@pytest.mark.parametrize("preset", REPORTED, ids=lambda p: p.name)
def test_reported_parameter_counts(preset):
    tolerance = 0.02 if preset.config["layout"] == "unet" else 0.01
    params = count_params(preset.config) / 1e6
    assert abs(params / preset.reported_params_m - 1) < tolerance, (params, preset.reported_params_m)


def test_the_table_is_covered():
    reported = {p.name: p.reported_params_m for p in REPORTED}
    table = {
        "hiir-b-sr-x2": 14.68, "hiir-b-sr-x3": 15.87, "hiir-b-sr-x4": 15.84,
        "hiir-l-sr-x3": 55.91, "hiir-l-sr-x4": 55.88, "hiir-l-linear-sr-x3": 54.41,
        "hiir-l-linear-sr-x4": 54.37, "hiir-xl-sr-x2": 110.90, "hiir-unet-deblur": 22.33,
        "hiir-b-v1-nol3-sr-x2": 11.87, "hiir-b-v1-nol3-sr-x4": 12.02, "hiir-b-v1-sr-x2": 14.35,
        "hiir-b-v1-sr-x4": 14.50, "hiir-b-v2-sr-x4": 19.37,
    }  # fmt: skip
    assert {k: reported.get(k) for k in table} == table


def test_presets_listed_and_named():
    listed = {d["name"]: d for d in list_presets() if d["arch"] == "hiir"}
    assert set(listed) == {p.name for p in hiir.PRESETS}
    assert listed["hiir-xl-sr-x2"]["reported_params"] == 110.90
    assert listed["hiir-b-sr-x2"]["params"] == count_params(PRESETS["hiir-b-sr-x2"].config)
    for name, d in listed.items():
        assert name.startswith("hiir-") and name == name.lower() and d["task"] in name
        if "-t-" in name:
            assert d["params"] < 2e6


def _check_forward_backward(model, x: torch.Tensor, scale: int, out_channels: int) -> None:
    with pytest.raises(TypeError, match="takes no run-time options, got k"):
        model(x, k=64)  # SemanIR's option: ignored silently before
    y = model(x)
    assert y.shape == (x.shape[0], out_channels, x.shape[2] * scale, x.shape[3] * scale)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


SMALL = [p for p in hiir.PRESETS if "-t-" in p.name or p.config["layout"] == "unet"]
LARGE = [p for p in hiir.PRESETS if p not in SMALL]


@pytest.mark.parametrize("preset", SMALL, ids=lambda p: p.name)
def test_small_and_unet_presets_train_at_any_size(preset):
    torch.manual_seed(0)
    model = build_model(preset.name)
    x = torch.rand(1, preset.in_channels, 13, 21)  # not a multiple of the size multiple (32 or 64)
    _check_forward_backward(model, x, preset.scale, model.descriptor.out_channels)


@pytest.mark.parametrize("preset", LARGE, ids=lambda p: p.name)
def test_large_presets_train(preset):
    # p and P change no weight (the position bias is continuous): smaller ones keep every layer of the
    # preset while the smallest input still has 2 regions (L3 at work) and costs little.
    torch.manual_seed(0)
    model = build_model(preset.name, window_size=4, region_size=8)
    assert model.descriptor.size_multiple == 8
    _check_forward_backward(model, torch.rand(1, 3, 7, 13), preset.scale, 3)


def test_bfloat16_forward():
    model = build_model("hiir-t-sr-x2").to(torch.bfloat16)
    y = model(torch.rand(1, 3, 16, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (1, 3, 32, 32)


# ----------------------------------------------------------------------------------------------------
# The window-attention baseline (benchmarks compare against it)
# ----------------------------------------------------------------------------------------------------


def test_baseline_windows_and_shifted_windows():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 8, 12)
    plain = baseline.WindowAttention(12, 2, window=4)
    shifted = baseline.WindowAttention(12, 2, window=4, shift=2)
    assert _reach(plain, x, 3, 3) == _box(0, 4, 0, 4)
    assert _reach(shifted, x, 3, 3) == _box(2, 6, 2, 6)  # the window straddling the first four
    # (0, 0) is rolled next to the bottom-right pixels, but the mask keeps it with its own corner
    assert _reach(shifted, x, 0, 0) == _box(0, 2, 0, 2)
    pair = torch.cat([x, torch.randn_like(x)])  # samples of a batch stay apart (per-window masks)
    with torch.no_grad():
        torch.testing.assert_close(shifted(pair)[:1], shifted(x))


def test_shifted_windows_match_the_fully_masked_reference():
    """Only border windows get the shift mask; the result equals masking every window."""
    torch.manual_seed(0)
    attn = baseline.WindowAttention(12, 2, window=4, shift=2)
    x = torch.randn(2, 12, 16, 12, requires_grad=True)
    rolled = torch.roll(x, (-2, -2), dims=(1, 2))
    t = window_partition(attn.qkv(rolled), (4, 4))
    q, k, v = t.view(-1, 16, 3, 2, 6).permute(2, 0, 3, 1, 4)
    mask = attn.position_bias.dense((4, 4)) + baseline.shift_mask(12, 16, 4, 2, x.device)  # every window
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.repeat(2, 1, 1, 1))
    ref = torch.roll(
        window_reverse(ref.transpose(1, 2).reshape(-1, 16, 12), (4, 4), 12, 16), (2, 2), dims=(1, 2)
    )
    out = attn(x)
    torch.testing.assert_close(out, attn.proj(ref))
    out.sum().backward()  # the split path trains too
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_baseline_preset_size_and_run():
    c, hidden, heads = 180, 512, 6
    layer = (
        (c * 3 * c + 3 * c)
        + (c * c + c)
        + (2 * hidden + hidden + hidden * heads)
        + 4 * c
        + (4 * c * c + 3 * c)
    )
    conv1 = 9 * c * c + c
    frame = (27 * c + c) + 4 * c + (9 * c * 64 + 64) + (9 * 64 * 256 + 256) + (9 * 64 * 3 + 3)
    assert count_params(PRESETS["baseline-swin-sr-x2"].config) == 36 * layer + 7 * conv1 + frame
    _check_forward_backward(build_model("baseline-t-sr-x2"), torch.rand(1, 3, 13, 21), 2, 3)
    # the full preset with 4-pixel windows (same weights): shifted layers at work on an 8 x 16 input
    _check_forward_backward(build_model("baseline-swin-sr-x2", window_size=4), torch.rand(1, 3, 7, 13), 2, 3)


def test_inference_mode_then_training():
    # cached index tables first made under inference_mode must still serve autograd calls
    for name, sizes in (
        ("hiir-t-sr-x2", dict(window_size=5, region_size=35)),
        ("baseline-t-sr-x2", dict(window_size=7)),
    ):
        model = build_model(name, **sizes)
        with torch.inference_mode():
            model(torch.rand(1, 3, 14, 14))
        model(torch.rand(1, 3, 14, 14)).mean().backward()


def test_training_advice_names_the_l3_blocks_a_patch_can_teach():
    with torch.device("meta"):
        unet = build_model("hiir-unet-deblur")  # regions of 64 input pixels at every level
        tiny_sr = build_model("hiir-t-sr-x2")
    (advice,) = unet.training_advice(128)
    assert "holds 2 x 2 regions" in advice and "model.l3_max_regions=2" in advice
    assert unet.training_advice(1024) == []  # 16 x 16 regions: every block size is trained
    assert tiny_sr.training_advice(32) == []  # the zoo recipes match their presets
    with torch.device("meta"):
        assert build_model("hiir-unet-deblur", use_l3=False).training_advice(64) == []
