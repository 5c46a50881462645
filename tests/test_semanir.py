"""SemanIR: dictionary, attention backends against each other and against dense attention, presets."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from irformers import models, profiling
from irformers.engine.trainer import enable_grad_checkpointing
from irformers.models import build_model, count_params, get_preset, list_presets, semanir
from irformers.models.presets import bundled_weights
from irformers.models.semanir import KSAttention, build_dictionary, choose_backend

# --------------------------------------------------------------------------- dictionary


def test_dictionary_is_topk_of_inner_products():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 16, 5, generator=g, requires_grad=True)
    d = build_dictionary(tokens, 4, (4, 4))
    assert d.index.shape == (3, 16, 4) and not d.index.requires_grad
    for b in range(3):
        for i in range(16):
            sims = [float(tokens[b, i].detach() @ tokens[b, j].detach()) for j in range(16)]
            best = sorted(range(16), key=lambda j: -sims[j])[:4]
            assert set(d.index[b, i].tolist()) == set(best)


def test_dictionary_cosine_option_and_k_clamp():
    tokens = torch.tensor([[[1.0, 0.0], [10.0, 1.0], [0.0, 1.0]]])
    # dot product: the long token 1 is everyone's best match; cosine: token 0 prefers itself
    assert build_dictionary(tokens, 1, (1, 3)).index[0, :, 0].tolist() == [1, 1, 1]
    assert build_dictionary(tokens, 1, (1, 3), "cosine").index[0, :, 0].tolist() == [0, 1, 2]
    assert build_dictionary(tokens, 99, (1, 3)).k == 3


def test_dictionary_chunks_do_not_change_it():
    tokens = torch.randn(5, 16, 8, generator=torch.Generator().manual_seed(1))
    whole = build_dictionary(tokens, 4, (4, 4)).index.sort(-1).values
    one_window = 16 * 16 * 4
    chunked = build_dictionary(tokens, 4, (4, 4), chunk_bytes=one_window).index.sort(-1).values
    assert torch.equal(chunked, whole)


# --------------------------------------------------------------------------- backends


def dense_window_attention(attn: KSAttention, x: torch.Tensor, window) -> torch.Tensor:
    """Ordinary window attention (every key), written independently of semanir.py's backends."""
    b, n, c = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    scale = torch.exp(torch.clamp(attn.logit_scale, max=math.log(100.0)))
    scores = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)) * scale
    wh, ww = window
    ys, xs = torch.div(torch.arange(n), ww, rounding_mode="floor"), torch.arange(n) % ww
    dy, dx = ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]
    # the MLP sees each distinct offset once; then every (query, key) pair looks its offset up
    oy, ox = torch.meshgrid(torch.arange(-wh + 1, wh), torch.arange(-ww + 1, ww), indexing="ij")
    coords = torch.stack([oy / max(wh - 1, 1), ox / max(ww - 1, 1)], dim=-1).float() * 8
    coords = torch.sign(coords) * torch.log2(coords.abs() + 1) / 3
    per_offset = 16 * torch.sigmoid(attn.cpb.mlp(coords))  # (2wh-1, 2ww-1, h)
    bias = per_offset[dy + wh - 1, dx + ww - 1].permute(2, 0, 1)  # (h, N, N)
    out = (scores + bias).softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def _attention_case(window, k, seed=0, dim=12, heads=3, batch=2, device="cpu"):
    torch.manual_seed(seed)
    attn = KSAttention(dim, heads)
    with torch.no_grad():  # a spread of logit scales, so heads differ
        attn.logit_scale.copy_(torch.linspace(1.0, 4.0, heads).view(-1, 1, 1))
    x = torch.randn(batch, window[0] * window[1], dim)
    attn, x = attn.to(device), x.to(device)
    return attn, x, build_dictionary(x, k, window)


def _run(attn, x, dictionary, backend):
    x = x.clone().requires_grad_()
    out = attn(x, dictionary, backend)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out) / out.shape[1]  # window mean
    (out * weights).sum().backward()
    grads = [x.grad] + [p.grad.clone() for p in attn.parameters()]
    attn.zero_grad()
    return out.detach(), grads


NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("window", "ks"),
    [
        ((8, 8), (1, 7, 64)),
        ((12, 12), (1, 37, 143, 144)),
        ((16, 16), (5, 256)),
        ((32, 32), (1, 64, 1023, 1024)),
    ],
)
def test_mask_and_gather_agree_outputs_and_gradients(window, ks, device):
    for k in ks:
        attn, x, dictionary = _attention_case(window, k, seed=k, device=device)
        out_m, grads_m = _run(attn, x, dictionary, "mask")
        out_g, grads_g = _run(attn, x, dictionary, "gather")
        torch.testing.assert_close(out_g, out_m, rtol=0, atol=1e-5)
        torch.testing.assert_close(grads_g[0], grads_m[0], rtol=0, atol=1e-5)  # the input gradient
        # parameter gradients sum over every token: compare relative to their size
        for gm, gg in zip(grads_m[1:], grads_g[1:], strict=True):
            torch.testing.assert_close(gg, gm, rtol=0, atol=1e-5 * max(1.0, gm.abs().max().item()) * 10)


def test_gather_and_mask_chunks_do_not_change_the_result():
    attn, _, dictionary = _attention_case((8, 8), 9)
    q, k, v = (torch.randn(2, 64, 3, 4) for _ in range(3))
    table = attn.cpb((8, 8)).detach()
    whole = semanir.gather_attention(q, k, v, table, dictionary)
    chunked = semanir.gather_attention(q, k, v, table, dictionary, chunk_bytes=2 * 2 * 9 * 12 * 4 * 5)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    one_window = 3 * 64 * 64 * 4  # mask chunks of one window each
    dense = semanir.mask_attention(q, k, v, table, dictionary)
    torch.testing.assert_close(
        semanir.mask_attention(q, k, v, table, dictionary, chunk_bytes=one_window), dense
    )
    with torch.no_grad():  # inference: the chunks share one mask buffer
        reused = semanir.mask_attention(q, k, v, table, dictionary, chunk_bytes=one_window)
    torch.testing.assert_close(reused, dense)
    torch.testing.assert_close(dense, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("window", [(8, 8), (16, 16), (32, 32), (6, 10)])
def test_k_equal_n_is_dense_window_attention(window):
    n = window[0] * window[1]
    attn, x, dictionary = _attention_case(window, n)
    ref = dense_window_attention(attn, x, window)
    for backend in ("mask", "gather"):
        torch.testing.assert_close(attn(x, dictionary, backend), ref, rtol=0, atol=1e-5)


def test_sparse_attention_ignores_keys_outside_the_dictionary():
    attn, x, dictionary = _attention_case((4, 4), 3)
    # change every token's value projection input except those in query 0's dictionary: query 0's
    # output must not move; with dense attention it would
    keep = set(dictionary.index[:, 0].flatten().tolist())
    out = attn(x, dictionary, "gather")[0, 0]
    x2 = x.clone()
    x2[0, [j for j in range(16) if j not in set(dictionary.index[0, 0].tolist())]] += 1.0
    out2 = attn(x2, dictionary, "gather")[0, 0]
    torch.testing.assert_close(out2, out, rtol=0, atol=1e-6)
    assert keep  # the dictionary is non-empty


def test_dot_attention_backends_agree():
    torch.manual_seed(1)
    attn = KSAttention(8, 2, attn_type="dot")
    x = torch.randn(2, 64, 8)
    d = build_dictionary(x, 10, (8, 8))
    torch.testing.assert_close(attn(x, d, "gather"), attn(x, d, "mask"), rtol=0, atol=1e-5)


def test_choose_backend():
    cpu = torch.device("cpu")
    common = {"batch": 4, "heads": 6, "dim": 180, "memory_bytes": 2**30, "device": cpu}
    fused = "fused" if semanir.fused_available() else "mask"
    # inference at N >= 1024 with k <= N / 2, training with k <= N / 8: the sparse path
    # (benchmarks/attention.py; results/attention_dense.json for k = N / 4 and N / 2 at N = 4096)
    for k in (32, 64, 256, 512):
        assert choose_backend(1024, k, backward=False, **common) == fused
    assert choose_backend(1024, 768, backward=False, **common) == "mask"
    assert choose_backend(1024, 64, backward=True, **common) == fused
    assert choose_backend(1024, 256, backward=True, **common) == "mask"
    assert choose_backend(256, 32, backward=False, **common) == "mask"  # small windows: no compile
    assert choose_backend(64, 64, backward=False, **common) == "mask"
    # a dense mask over the budget: chunked in inference, sparse with autograd (every chunk is kept):
    # fused where it compiles (CPU), else gather only where its gathered keys and values keep less
    big = {"batch": 64, "heads": 6, "dim": 180, "memory_bytes": 2**30}
    assert choose_backend(4096, 3072, backward=False, device=cpu, **big) == "mask"
    over_budget = "fused" if semanir.fused_available() else "mask"
    assert choose_backend(4096, 2048, backward=True, device=cpu, **big) == over_budget
    cuda = torch.device("cuda")
    assert choose_backend(4096, 2048, backward=True, device=cuda, **big) == "mask"  # gather: 10x the memory
    assert choose_backend(4096, 32, backward=True, device=cuda, **big) == "gather"  # k < 3hN / (2C + 3h)
    # SemanIR-S's paper recipe on a GPU (16 windows of 1024 tokens): gather would keep 1.3x / 10x the memory
    paper = {**big, "batch": 16}
    assert choose_backend(1024, 64, backward=True, device=cuda, **paper) == "mask"
    assert choose_backend(1024, 512, backward=True, device=cuda, **paper) == "mask"
    assert [choose_backend(1024, k, backward=True, device=cuda, **paper) for k in (48, 49)] == [
        "gather",
        "mask",
    ]


def test_bad_backend_and_options_are_reported():
    with pytest.raises(ValueError, match="backend"):
        KSAttention(8, 2, backend="triton")
    with pytest.raises(ValueError, match="backend"):
        build_model("semanir-t-sr-x2")(torch.rand(1, 3, 8, 8), backend="flash")
    with pytest.raises(ValueError, match="unknown keys"):
        build_model("semanir-t-sr-x2", windowsize=8)
    with pytest.raises(KeyError, match="unknown model preset"):
        build_model("semanir-xl-sr-x2")


# --------------------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def tiny_sr():
    torch.manual_seed(0)
    return build_model("semanir-t-sr-x2").eval()


def test_dictionary_built_once_per_stage(tiny_sr, monkeypatch):
    calls = []
    real_topk = torch.topk

    def counting_topk(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs["k"])
        return real_topk(*args, **kwargs)

    monkeypatch.setattr(torch, "topk", counting_topk)
    with torch.no_grad():
        tiny_sr(torch.rand(1, 3, 20, 20), k=7, backend="gather")
    assert len(calls) == len(tiny_sr.frame.stages) == 3
    assert set(calls) == {7}
    calls.clear()
    unet = build_model("semanir-t-denoise-gray", backend="mask").eval()
    with torch.no_grad():
        unet(torch.rand(1, 1, 20, 20), k=1000)
    assert len(calls) == 8  # 3 encoder + bottleneck + 3 decoder + refinement stages
    assert calls[:4] == [256, 256, 64, 16]  # 20 -> 32 pixels; k clamped to each level's (shrunk) window


def test_cpu_inference_takes_windows_a_few_at_a_time(tiny_sr, monkeypatch):
    """Same output; each piece of windows builds its own dictionary; autograd runs whole maps."""
    calls = []
    real_topk = torch.topk
    monkeypatch.setattr(torch, "topk", lambda t, k, **kw: calls.append(len(t)) or real_topk(t, k, **kw))
    x = torch.rand(1, 3, 40, 40)  # padded to 48: 3 x 3 windows of 16 x 16 in each of the 3 stages
    with torch.no_grad():
        whole = tiny_sr(x, k=9)  # windows of 256 tokens: below TILE_MIN_WINDOW, whole maps
        assert calls == [9] * 3
        calls.clear()
        monkeypatch.setattr(semanir, "TILE_TOKENS", 2 * 16 * 16)
        monkeypatch.setattr(semanir, "TILE_MIN_WINDOW", 16 * 16)
        tiled = tiny_sr(x, k=9)
    assert calls == [2, 2, 2, 2, 1] * 3
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)
    calls.clear()
    tiny_sr(x, k=9)  # with autograd
    assert calls == [9] * 3


def test_random_k_in_training_one_draw_per_forward(monkeypatch):
    calls = []
    real_topk = torch.topk
    monkeypatch.setattr(torch, "topk", lambda t, k, **kw: calls.append(k) or real_topk(t, k, **kw))
    torch.manual_seed(0)
    model = build_model("semanir-t-sr-x2", backend="mask", window_size=8).train()
    model.k_choices = (7, 9, 11)
    seen = set()
    for _ in range(12):
        calls.clear()
        model(torch.rand(1, 3, 8, 8))
        assert len(set(calls)) == 1  # one k for all stages of a forward pass
        seen.add(calls[0])
    assert seen == {7, 9, 11}
    calls.clear()
    build_model("semanir-t-sr-x2", train_k="fixed", k=5, window_size=8).train()(torch.rand(1, 3, 8, 8))
    assert set(calls) == {5}


def test_random_k_choices_fit_the_window():
    with torch.device("meta"):
        assert build_model("semanir-s-sr-x2").k_choices == semanir.RANDOM_K_CHOICES  # 1024 tokens
        assert build_model("semanir-t-denoise-gray").k_choices == (64, 128, 192, 256)
        assert build_model("semanir-t-sr-x2", window_size=4).k_choices == (16,)  # fewer than any choice
        assert build_model("semanir-t-sr-x2", train_k="fixed").k_choices == ()
        # the paper's rule: every choice, clamped to the window's tokens, so a dense window half the time
        assert build_model("semanir-t-sr-x2", random_k="clamp").k_choices == (64, 128, 192, 256, 256, 256)
        with pytest.raises(ValueError, match="random_k must be"):
            build_model("semanir-t-sr-x2", random_k="sometimes")


@pytest.mark.parametrize(
    ("name", "shape"), [("semanir-t-sr-x3", (2, 3, 17, 23)), ("semanir-t-jpeg-gray", (2, 1, 19, 9))]
)
def test_backends_agree_on_whole_models(name, shape):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(*shape)
    outs = {}
    for backend in ("mask", "gather"):
        xi = x.clone().requires_grad_()
        out = model(xi, k=11, backend=backend)
        out.square().mean().backward()
        outs[backend] = (out.detach(), xi.grad)
    torch.testing.assert_close(outs["gather"][0], outs["mask"][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(outs["gather"][1], outs["mask"][1], rtol=0, atol=1e-5)
    scale = model.descriptor.scale
    assert outs["mask"][0].shape == (shape[0], shape[1], shape[2] * scale, shape[3] * scale)


@pytest.fixture
def fresh_fused_state(monkeypatch):
    """The fused path as in a new process: nothing compiled, nothing failed."""
    state = {"scores": None, "weighted_sum": None, "failed": False, "backward": False}
    monkeypatch.setattr(semanir, "_FUSED_STATE", state)
    return state


def test_fused_backend_matches_mask(tiny_sr, monkeypatch, fresh_fused_state):
    """The compiled path, outputs, input and parameter gradients (about 35 s on 2 cores when the compiler
    cache is cold: the backward compiles separately), from a fresh state so that the first call with
    autograd compiles the backward on its detached copies (which must leave no gradient behind)."""
    x = torch.rand(1, 3, 32, 32)  # 4 windows of 16 x 16
    with torch.no_grad():
        ref = tiny_sr(x, k=9, backend="mask")
        out = tiny_sr(x, k=9, backend="fused")
    grads = {}
    for backend in ("mask", "fused"):
        xi = x.clone().requires_grad_()
        tiny_sr.zero_grad()
        tiny_sr(xi, k=9, backend=backend).square().mean().backward()
        grads[backend] = [xi.grad] + [p.grad.clone() for p in tiny_sr.parameters()]
    tiny_sr.zero_grad()
    monkeypatch.setattr(semanir, "FUSED_CHUNK_BYTES", 1)  # one window per chunk
    with torch.no_grad():
        chunked = tiny_sr(x, k=9, backend="fused")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked, ref, rtol=0, atol=1e-5)
    for fused, mask in zip(grads["fused"], grads["mask"], strict=True):  # parameters' sum over tokens
        torch.testing.assert_close(fused, mask, rtol=0, atol=1e-5 * max(1.0, mask.abs().max().item()))
    assert semanir.fused_available()


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no C++ compiler for the backward")


def test_a_backward_that_fails_to_compile_falls_back_to_gather(monkeypatch, fresh_fused_state):
    """Autograd compiles the backward at the first .backward(), where the fallback could not catch it:
    the fused path compiles it at once, inside the fallback, so training goes on with `gather`."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: lambda *a: _FailingBackward.apply(fn(*a)))
    attn, x, dictionary = _attention_case((8, 8), 16)
    with pytest.warns(UserWarning, match="fused attention unavailable"):
        out, grads = _run(attn, x, dictionary, "fused")
    ref, ref_grads = _run(attn, x, dictionary, "gather")
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not semanir.fused_available()


def test_the_backward_probe_stays_out_of_gradient_checkpoints(tiny_sr, monkeypatch, fresh_fused_state):
    """Under train.grad_checkpointing the probe's own graph was recorded by the stage's checkpoint: its
    backward set off a recomputation inside the forward, and the real backward failed on a tensor count."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # the fused path's graph, uncompiled
    model = copy.deepcopy(tiny_sr).train()
    assert enable_grad_checkpointing(model) > 0
    x = torch.rand(1, 3, 32, 32)
    grads = {}
    for backend in ("fused", "mask"):
        model.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no fallback either
            model(x, k=9, backend=backend).square().mean().backward()
        grads[backend] = [p.grad.clone() for p in model.parameters()]
    for fused, mask in zip(grads["fused"], grads["mask"], strict=True):
        torch.testing.assert_close(fused, mask, rtol=0, atol=1e-5 * max(1.0, mask.abs().max().item()))
    assert semanir._FUSED_STATE["backward"] and not semanir._FUSED_STATE["failed"]


def test_a_compiler_that_fails_falls_back_to_gather(monkeypatch, fresh_fused_state):
    """torch.compile itself can raise (e.g. on a Python it does not support): `fused` then warns once,
    runs `gather`, and `auto` stops choosing it."""

    def no_compiler(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported here")

    monkeypatch.setattr(torch, "compile", no_compiler)
    attn, x, dictionary = _attention_case((8, 8), 16)
    with torch.no_grad(), pytest.warns(UserWarning, match="fused attention unavailable"):
        out = attn(x, dictionary, "fused")
    with torch.no_grad():
        torch.testing.assert_close(out, attn(x, dictionary, "gather"), rtol=0, atol=0)
    assert not semanir.fused_available()
    cpu = {"batch": 1, "heads": 2, "dim": 8, "device": torch.device("cpu"), "memory_bytes": 2**30}
    assert choose_backend(1024, 64, backward=False, **cpu) == "mask"


def test_shape_only_runs_never_compile_the_fused_path(tiny_sr, fresh_fused_state):
    """A meta-device forward (MAC counting) compiling the fused path left dynamo running it uncompiled
    for real inputs afterwards (20x slower); it must take the eager path and leave no compiled state."""
    meta = copy.deepcopy(tiny_sr).to("meta")
    with torch.no_grad():
        out = meta(torch.empty(1, 3, 32, 32, device="meta"), k=9, backend="fused")
    assert out.shape == (1, 3, 64, 64) and semanir._FUSED_STATE["scores"] is None
    assert profiling.count_macs(tiny_sr, (1, 3, 32, 32), k=9, backend="fused") == profiling.count_macs(
        tiny_sr, (1, 3, 32, 32), k=9, backend="gather"
    )


REPORTED = {
    "semanir-s-sr-x2": 11.87,
    "semanir-s-sr-x3": 12.05,
    "semanir-s-sr-x4": 12.02,
    "semanir-b-sr-x2": 19.90,
    "semanir-b-sr-x3": 20.08,
    "semanir-b-sr-x4": 20.04,
}


@pytest.mark.parametrize(("name", "millions"), REPORTED.items())
def test_columnar_parameter_counts(name, millions):
    assert get_preset(name).reported_params_m == millions
    assert abs(count_params(get_preset(name).config) / 1e6 - millions) <= 0.01


def test_unet_parameter_counts():
    unets = [p for p in semanir.PRESETS if p.name.startswith("semanir-unet-")]
    names = {p.name for p in unets}
    assert {"semanir-unet-denoise-gray", "semanir-unet-denoise-color", "semanir-unet-jpeg-gray"} <= names
    assert {"semanir-unet-jpeg-color", "semanir-unet-demosaic", "semanir-unet-deblur"} <= names
    for p in unets:
        assert p.reported_params_m == 25.82
        assert abs(count_params(p.config) / 1e6 - 25.82) / 25.82 < 0.02


def test_small_presets_are_small_and_listed(monkeypatch):
    small = {p.name: p for p in semanir.PRESETS if "-t-" in p.name}
    assert len(small) >= 7
    monkeypatch.setattr(models, "PRESETS", small)  # list only these: building all presets takes seconds
    rows = list_presets()
    assert [r["name"] for r in rows] == list(small)
    for r in rows:
        assert set(r) == {
            "name",
            "arch",
            "task",
            "scale",
            "in_channels",
            "params",
            "reported_params",
            "weights",
            "note",
            "config",
        }
        assert r["arch"] == "semanir" and r["reported_params"] is None
        assert r["config"].items() >= get_preset(r["name"]).config.items()  # and the defaults beside them
        assert {"window_size", "k", "depths"} <= set(r["config"])  # keys a recipe may override
        assert r["weights"] == (bundled_weights(r["name"]) is not None)
        assert 0 < r["params"] < 2_000_000
        assert r["note"]  # what the preset is, e.g. "the project's own small preset"
        model = build_model(r["name"])
        assert r["params"] == sum(p.numel() for p in model.parameters())  # meta count == real count


def test_descriptor_and_config():
    model = build_model("semanir-t-sr-x4")
    d = model.descriptor
    assert (d.arch, d.task, d.scale, d.in_channels, d.out_channels) == ("semanir", "sr", 4, 3, 3)
    assert d.size_multiple == model.config["window_size"] and d.supports_k
    assert model.config["arch"] == "semanir" and model.config["k"] == 128
    rebuilt = build_model(model.config)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    demosaic = build_model("semanir-unet-demosaic").descriptor
    assert (demosaic.in_channels, demosaic.out_channels, demosaic.scale) == (1, 3, 1)
    assert demosaic.bayer_input and not d.bayer_input  # the self-ensemble keeps a mosaic's phase
    assert demosaic.size_multiple % 32 == 0 and demosaic.size_multiple % 8 == 0
    # tiles align to the coarsest level's windows (16 tokens at 1/8: 128 input pixels); a k above a
    # window's 256 tokens attends to all of them
    unet = build_model("semanir-t-denoise-gray").descriptor
    assert (unet.size_multiple, unet.tile_multiple, unet.window_tokens) == (16, 128, 256)
    assert (d.tile_multiple, build_model("hiir-t-sr-x2").descriptor.window_tokens) == (16, None)


def _preset_names(small: bool) -> list[str]:
    return [r.name for r in semanir.PRESETS if ("-t-" in r.name) == small]


@pytest.mark.parametrize("name", _preset_names(small=True))
def test_small_presets_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name)
    d = model.descriptor
    x = torch.rand(2, d.in_channels, 13, 18)
    out = model(x, k=16, backend="mask")
    assert out.shape == (2, d.out_channels, 13 * d.scale, 18 * d.scale)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", _preset_names(small=False))
def test_large_presets_run(name):
    """Forward only, on one window (backward runs the same code in the small presets' test)."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    d = model.descriptor
    x = torch.rand(1, d.in_channels, 16, 16)  # the frame pads to its size multiple
    with torch.no_grad():
        out = model(x, k=32, backend="mask")
    assert out.shape == (1, d.out_channels, 16 * d.scale, 16 * d.scale)
    assert torch.isfinite(out).all()


def test_position_bias_gradients_add_up_in_the_same_order_every_time():
    """`table[:, index]`'s backward accumulated in thread order on a 2-thread CPU once the index was large
    (SemanIR's gather and mask paths): the position-bias MLP's gradients, and so a resumed training,
    differed from run to run in the last bits."""
    from irformers.models.layers import take_bias

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        table = torch.randn(2, 961, generator=gen, requires_grad=True)
        index = torch.randint(0, 961, (18, 256, 64), generator=gen)
        upstream = torch.randn(18, 2, 256, 64, generator=gen)  # batch first, as gather_attention adds it
        assert torch.equal(take_bias(table, index), table[:, index])
        grads = []
        for _ in range(4):
            table.grad = None
            (take_bias(table, index).transpose(0, 1) * upstream).sum().backward()
            grads.append(table.grad.clone())
        assert all(torch.equal(grads[0], g) for g in grads[1:])
    finally:
        torch.set_num_threads(threads)
