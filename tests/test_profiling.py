"""irformers.profiling and `irformers bench`: counts checked against hand-computed ones, CLI contract."""

from __future__ import annotations

import json
import platform

import pytest
import torch
from torch import nn

from irformers import profiling
from irformers.cli import main
from irformers.models import build_model
from irformers.models.presets import bundled_weights

CPU = torch.device("cpu")


def test_macs_of_a_convolution_match_the_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert profiling.count_macs(conv, (2, 3, 16, 20)) == 2 * 16 * 20 * 8 * 3 * 9


def test_semanir_macs_follow_k_and_every_architecture_grows_linearly_in_pixels():
    model = build_model("semanir-t-sr-x2")  # window 16: N = 256 keys per window at most
    small, large = (profiling.count_macs(model, (1, 3, 32, 32), k=k) for k in (16, 128))
    assert small < large  # the sparse work is counted, not dense scores
    for name in ("semanir-t-sr-x2", "hiir-t-sr-x2", "baseline-t-sr-x2"):
        model = build_model(name)
        m64, m128 = (profiling.count_macs(model, (1, 3, s, s)) for s in (64, 128))
        assert 3.9 < m128 / m64 < 4.1, name


def test_time_calls_times_only_the_measured_calls():
    calls = []
    times = profiling.time_calls(lambda: calls.append(1), CPU, repeat=4, warmup=3)
    assert len(times) == 4 and len(calls) == 7 and all(t >= 0 for t in times)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="RSS peak needs Linux + glibc"
)
def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed on return
        return float(x[0])

    peak = profiling.peak_memory_mb(allocate, CPU)
    assert 60 < peak < 200
    assert profiling.peak_memory_mb(lambda: None, CPU) < 16


def test_profile_model_reports_consistent_figures():
    model = build_model("hiir-t-sr-x2")
    state = torch.get_rng_state()
    r = profiling.profile_model(model, (1, 3, 32, 32), device="cpu", repeat=2)  # a device name will do
    assert profiling.profile_model(model, (1, 3, 8, 8), device="auto", repeat=1, memory=False)["params"]
    assert torch.equal(torch.get_rng_state(), state)  # it drew its input from the caller's generator
    with pytest.raises(ValueError, match="repeat must be at least 1"):  # was: no median for empty data
        profiling.profile_model(model, (1, 3, 32, 32), device=CPU, repeat=0)
    assert r["params"] == sum(p.numel() for p in model.parameters())
    assert r["macs"] == profiling.count_macs(model, (1, 3, 32, 32))
    assert r["gflops"] == pytest.approx(2 * r["macs"] / (r["median_ms"] / 1000) / 1e9)
    assert len(r["times_ms"]) == 2 and r["min_ms"] <= r["median_ms"]
    assert profiling.matmul_peak_gflops(CPU, size=256, repeat=2) > 0


def test_bench_cli_json_one_row_per_k(capsys):
    code = main(
        ["bench", "semanir-t-sr-x2", "baseline-t-sr-x2", "--size", "32", "--k", "16,512", "--repeat", "1",
         "--no-memory", "--json"]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    rows = [(r["model"], r["k"]) for r in out["rows"]]
    # a row names the k that ran: the tiny preset's windows hold 256 tokens, so an asked 512 runs as 256
    assert rows == [("semanir-t-sr-x2", 16), ("semanir-t-sr-x2", 256), ("baseline-t-sr-x2", None)]
    assert out["machine"]["device"] == "cpu" and out["rows"][0]["macs"] < out["rows"][1]["macs"]
    # and the asked k above that is said to be dense
    assert captured.err.splitlines() == [
        "note: semanir-t-sr-x2: windows hold at most 256 tokens, so k 512 attends to whole windows "
        "(k 256, or fewer where a window is smaller)"
    ]


def test_bench_cli_table_and_errors(capsys):
    assert main(["bench", "hiir-t-sr-x2", "--size", "32", "--repeat", "1", "--matmul-peak"]) == 0
    out = capsys.readouterr().out
    assert "hiir-t-sr-x2" in out and "matmul peak" in out and "MACs = FLOPs / 2" in out
    assert f"({CPU.type}), {torch.get_num_threads()} CPU threads, float32, median of 1;" in out  # quotable
    assert main(["bench", "hiir-t-sr-x2", "--precision", "int8"]) == 2
    assert "--precision int8" in capsys.readouterr().err
    assert main(["bench", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    for bad, said in (
        ("--backend=foo", "--backend foo"),
        ("--repeat=0", "--repeat 0"),
        ("--size=-4", "--size -4"),
        ("--k=0", "--k 0"),
        ("--k=,64", "cannot read ',64'"),  # a typo, not a list of one
        *([] if torch.cuda.is_available() else [("--precision=fp16", "fp16 needs a CUDA device")]),
    ):
        assert main(["bench", "semanir-t-sr-x2", bad]) == 2
        assert said in capsys.readouterr().err.strip().splitlines()[-1]


def test_bench_takes_foreign_weights_with_arch_beside_presets(capsys, tmp_path):
    """Its error for a .pth told users to pass --arch, which bench did not take."""
    weights = tmp_path / "foreign.pth"
    torch.save(build_model("semanir-t-sr-x2").state_dict(), weights)
    argv = [
        "bench",
        str(weights),
        "semanir-t-sr-x2",
        "--size",
        "16",
        "--repeat",
        "1",
        "--no-memory",
        "--json",
    ]
    assert main([*argv, "--arch", "semanir-t-sr-x2"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["model"].endswith("foreign.pth") and rows[0]["params"] == rows[1]["params"] > 0
    assert main(argv) == 2
    assert "pass --arch PRESET" in capsys.readouterr().err
    assert main([*argv[:1], *argv[2:], "--arch", "semanir-t-sr-x2"]) == 2  # --arch with presets only
    assert "no model listed is one" in capsys.readouterr().err
    own = str(bundled_weights("hiir-t-sr-x2"))  # --arch applies to the foreign file of a list only
    assert main([*argv[:2], own, *argv[3:], "--arch", "semanir-t-sr-x2"]) == 0
    hiir = json.loads(capsys.readouterr().out)["rows"][1]
    assert hiir["params"] == sum(p.numel() for p in build_model("hiir-t-sr-x2").parameters())


def test_hiir_half_width_qk_is_counted_without_its_zero_padding():
    """Hi-IR pads q and k to v's width for the fused kernels; that padding is no work and not counted."""
    from irformers.models import hiir

    c, heads, n = 16, 2, 16  # level 1: 4x4 windows, 64 tokens in 4 groups
    level = hiir.LevelAttention(c, heads, 1, qk_dim=c // 2, window=4, region=8)
    qkv = 64 * c * (c // 2 * 2 + c)
    bias_mlp = 7 * 7 * (2 * 512 + 512 * heads)  # one table entry per relative offset of a 4x4 grid
    attention = 4 * heads * n * n * (c // 2 // heads + c // heads)  # q k^T at half width, then p v
    assert profiling.count_macs(level, (1, 8, 8, c)) == qkv + bias_mlp + attention
