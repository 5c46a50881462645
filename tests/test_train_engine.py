"""The trainer: exact resume, data-parallel ranks, crash safety, precision options, bad input."""

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from irformers.cli import main
from irformers.data.io import TEMP_GLOB, write_image
from irformers.engine.checkpoint import CheckpointError, load_training_state, model_from_file, read_metadata
from irformers.engine.config import ConfigError, config_from_dict
from irformers.engine.trainer import EMA, Trainer, build_model_from_config, enable_grad_checkpointing
from irformers.models import build_model

REPO = Path(__file__).resolve().parents[1]
# A SemanIR small enough for milliseconds per step: one stage, 16x16 windows (256 tokens, so that
# random k from 64 to 256 changes the dictionary), DropPath (so the torch RNG matters on resume).
TINY_SEMANIR = {
    "preset": "semanir-t-sr-x2",
    "dim": 12,
    "num_heads": 2,
    "depths": [2],  # DropPath rates rise linearly from 0: the second layer drops
    "window_size": 16,
    "k": 16,
    "cpb_hidden": 16,
    "upsampler_features": 8,
    "drop_path": 0.1,
    "backend": "mask",
}


def _images(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        ramp = np.linspace(0, 150, size)[None, :, None] + np.linspace(0, 80, size)[:, None, None]
        write_image(
            folder / f"img{i}.png",
            np.clip(ramp + rng.integers(0, 60, (size, size, 3)), 0, 255).astype(np.uint8),
        )


def _raw_config(tmp_path: Path, name: str = "run", **sections) -> dict:
    if not (tmp_path / "data").is_dir():
        _images(tmp_path / "data" / "train", 5, 40)
        _images(tmp_path / "data" / "Val" / "HR", 2, 24)
    raw = {
        "model": dict(TINY_SEMANIR),
        "data": {
            "task": "sr",
            "scale": 2,
            "root": str(tmp_path / "data"),
            "train": ["train"],
            "patch_size": 16,
            "batch_size": 2,
            "num_workers": 0,
        },
        "train": {"steps": 6, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 2},
        "val": {"sets": ["Val"], "every": 3},
        "log": {"every": 1},
        "checkpoint": {"every": 3},
        "run": {"name": name, "out_dir": str(tmp_path / "runs"), "seed": 7, "threads": 1},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def _train(raw: dict) -> dict:
    return Trainer(config_from_dict(raw)).fit()


def _state(tmp_path: Path, name: str) -> dict:
    return load_training_state(tmp_path / "runs" / name / "train_state.pt")


def test_a_run_resumed_in_fp16_starts_its_gradient_scaler(tmp_path):
    """An fp32 run's state holds an empty scaler state, which an fp16 scaler refused to load."""
    _train(_raw_config(tmp_path, val={"sets": []}, run={"stop_at": 3}))
    summary = _train(_raw_config(tmp_path, val={"sets": []}, train={"precision": "fp16"}))
    assert summary["steps"] == 6 and _state(tmp_path, "run")["scaler"]  # now a scaler's state


def test_an_indexed_gpu_under_torchrun_is_refused():
    """cuda:0 put every rank on GPU 0 (NCCL then fails on a duplicate GPU)."""
    from irformers.engine.distributed import DistInfo, pick_device

    with pytest.raises(
        ConfigError, match=r"run\.device: cuda:0 under torchrun puts every process on one GPU"
    ):
        pick_device("cuda:0", DistInfo(rank=1, world_size=2, local_rank=1))


def test_bf16_counts_as_supported_on_ampere_and_later_only(monkeypatch):
    """torch's is_bf16_supported() says yes for the emulated bf16 of pre-Ampere GPUs (V100, T4)."""
    from irformers.devices import native_bf16

    for capability, native in (((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert native_bf16(torch.device("cuda", 0)) is native


def test_rng_state_keeps_this_process_gpu_only(monkeypatch):
    """A state holding all of 8 GPUs' RNG states failed (IndexError) where fewer were visible."""
    from irformers.engine.trainer import rng_state, set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    state = rng_state()
    assert len(state["cuda"]) == 1
    set_rng_state(
        {**state, "cuda": [torch.tensor([i], dtype=torch.uint8) for i in range(8)]}
    )  # an older state
    set_rng_state(state)
    assert [int(t) for t in restored] == [0, 7]


def test_a_finished_run_rerun_reports_the_time_it_took(tmp_path, monkeypatch):
    """A no-op rerun said 14 s for a run that had taken 20: the state's time left out the last validation."""
    validate = Trainer._validate

    def slow(self, model):
        time.sleep(1.0)
        return validate(self, model)

    monkeypatch.setattr(Trainer, "_validate", slow)
    took = _train(_raw_config(tmp_path, val={"sets": ["Val"], "every": 6}))["seconds"]
    again = _train(_raw_config(tmp_path, val={"sets": ["Val"], "every": 6}))["seconds"]
    assert took >= 1.0 and abs(again - took) < 0.5, (took, again)


def test_a_run_started_afresh_over_its_state_says_so(tmp_path, capsys):
    """run.resume=never replaced a run's weights, state and log without a word."""
    no_val = {"sets": []}
    _train(_raw_config(tmp_path, val=no_val, run={"stop_at": 3}))
    assert "afresh" not in capsys.readouterr().err
    _train(_raw_config(tmp_path, val=no_val, train={"steps": 2, "warmup_steps": 0}, run={"resume": "never"}))
    assert "run.resume=never starts it afresh; its state (at step 3) is replaced" in capsys.readouterr().err
    assert _state(tmp_path, "run")["step"] == 2


def test_a_run_resumed_with_another_recipe_says_what_changed(tmp_path, capsys):
    """Same recipe (another stop_at): the resume alone is said. Changed: one note naming each change.
    Nothing to do: the run folder keeps the recipe and the log it was trained with."""
    no_val = {"sets": []}
    _train(_raw_config(tmp_path, val=no_val, run={"stop_at": 3}))
    saved = tmp_path / "runs" / "run" / "config.yaml"  # as a version without train.cosine_start wrote it
    older = yaml.safe_load(saved.read_text())
    del older["train"]["cosine_start"]
    saved.write_text(yaml.safe_dump(older))
    _train(_raw_config(tmp_path, val=no_val))
    err = capsys.readouterr().err  # the key it lacks had its default: no change
    assert "resumes at step 3 (run.resume=never starts afresh)" in err and "changed" not in err
    log = (tmp_path / "runs" / "run" / "log.jsonl").read_text()
    _train(_raw_config(tmp_path, val=no_val, train={"steps": 4, "lr": 5e-4}))
    assert (tmp_path / "runs" / "run" / "log.jsonl").read_text() == log  # no start/end of a session idle
    err = capsys.readouterr().err
    assert "is at step 6 with a changed recipe: train.lr: 0.001 -> 0.0005; train.steps: 6 -> 4" in err
    assert "resumes" not in err  # it has nothing to do
    assert "nothing to do, the run is at step 6 of 4" in err
    argv = ["train", str(_write(tmp_path, _raw_config(tmp_path, val=no_val, train={"lr": 5e-4}))), "--check"]
    assert main(argv) == 0  # --check said only "resumes": the run itself lists the changes
    assert (
        "resumes" in (out := capsys.readouterr().out)
        and "with a changed recipe: train.lr: 0.001 -> 0.0005" in out
    )
    assert main(["train", str(_write(tmp_path, _raw_config(tmp_path, val=no_val)))]) == 0
    assert capsys.readouterr().out.startswith("nothing trained: ")  # was "trained 6/6 steps in 2 s"
    saved = yaml.safe_load((tmp_path / "runs" / "run" / "config.yaml").read_text())["train"]
    assert (saved["steps"], saved["lr"]) == (6, 1e-3)
    with pytest.raises(ConfigError) as info:  # another network: refused, naming the first mismatch
        _train(_raw_config(tmp_path, val=no_val, model={"dim": 16}))
    assert "train_state.pt does not fit this model (size mismatch for frame.conv_first.weight" in str(
        info.value
    )
    assert str(info.value).endswith("; the recipe changed model.dim: 12 -> 16")  # was "was model.* changed?"
    with pytest.raises(ConfigError) as info:  # a stage more: torch lists every missing key on one line
        _train(_raw_config(tmp_path, val=no_val, model={"depths": [2, 2]}))
    assert "(Missing key(s) in state_dict:" in str(info.value) and len(str(info.value)) < 300 + len(
        str(tmp_path)
    )
    state_file = tmp_path / "runs" / "run" / "train_state.pt"
    state = load_training_state(state_file)
    torch.save({**state, "version": state["version"] + 1}, state_file)  # from a newer irformers: refused
    with pytest.raises(ConfigError, match=r"written by a newer irformers \(training state version 2"):
        _train(_raw_config(tmp_path, val=no_val))
    torch.save(state, state_file)
    # another run resumed into a new one: compared with the recipe that run followed
    (tmp_path / "runs" / "run" / "config.yaml").write_text("train: [unclosed\n")  # unreadable: no note
    resume = {"resume": str(tmp_path / "runs" / "run")}
    _train(_raw_config(tmp_path, "other", val=no_val, train={"steps": 8}, run=resume))
    assert "changed recipe" not in capsys.readouterr().err
    resume = {"resume": str(tmp_path / "runs" / "other")}
    _train(_raw_config(tmp_path, "third", val=no_val, train={"steps": 10}, run=resume))
    assert (
        "resumes at step 8 with a changed recipe: train.steps: 8 -> 10 (run.resume" in capsys.readouterr().err
    )


def test_a_run_resumed_with_other_optimizer_settings_uses_them(tmp_path):
    """The state's parameter groups came back with the optimizer's state: betas and weight decay stayed
    the old recipe's (and Adam's coupled decay under AdamW) while the note said they had changed."""
    no_val = {"sets": []}
    _train(_raw_config(tmp_path, val=no_val, run={"stop_at": 3}))
    changed = {"optimizer": "adamw", "betas": [0.5, 0.9], "weight_decay": 0.1}
    _train(_raw_config(tmp_path, val=no_val, train=changed))
    groups = _state(tmp_path, "run")["optimizer"]["param_groups"]
    assert [tuple(g["betas"]) for g in groups] == [(0.5, 0.9)] * 2
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and groups[0]["decoupled_weight_decay"]


def test_weights_say_the_task_they_were_trained_for(tmp_path):
    """A denoising preset trained for JPEG is a JPEG model ('info' and restore's file names said denoise);
    a task the recipe sets stays."""
    data = {"task": "jpeg", "scale": 1, "quality_range": [10, 40], "gray": True, "patch_size": 32}
    raw = {
        **_raw_config(tmp_path, data=data, val={"sets": []}),
        "model": {"preset": "semanir-t-denoise-gray"},
    }
    model = Trainer(config_from_dict(raw)).model
    assert model.config["task"] == "jpeg" and model.descriptor.task == "jpeg"
    raw["model"]["task"] = "denoise"
    assert Trainer(config_from_dict(raw)).model.descriptor.task == "denoise"


def test_a_validation_that_lost_an_image_says_how_many_it_scored(tmp_path, capsys):
    """The mean of the images left was recorded as the set's score, in the log and the weights file."""
    raw = _raw_config(tmp_path, train={"steps": 2, "warmup_steps": 0}, val={"every": 0})
    broken = tmp_path / "data" / "Val" / "HR" / "img1.png"
    broken.write_bytes(broken.read_bytes()[:-30])  # its header intact: found by the validation
    summary = _train(raw)
    assert summary["validation"]["Val"]["images"] == "1 of 2"
    err = capsys.readouterr().err
    assert "validation failed: " in err
    assert "step 2 validation: Val psnr " in err and " images 1 of 2" in err  # said, not only logged
    meta = read_metadata(tmp_path / "runs" / "run" / "model.safetensors")
    assert meta["training"]["validation"]["Val"]["images"] == "1 of 2"


def test_paired_training_says_how_to_name_its_task(tmp_path, capsys):
    """Paired data says nothing of what it restores: a deblurrer kept the preset's 'denoise' unsaid."""
    (tmp_path / "data" / "Pairs").mkdir(parents=True)
    _images(tmp_path / "data" / "Pairs" / "input", 2, 32)
    _images(tmp_path / "data" / "Pairs" / "target", 2, 32)
    data = {"task": "paired", "scale": 1, "train": ["Pairs"], "patch_size": 32}
    raw = {
        **_raw_config(tmp_path, data=data, val={"sets": []}),
        "model": {"preset": "semanir-t-denoise-color"},
    }
    assert Trainer(config_from_dict(raw)).model.descriptor.task == "denoise"
    assert "the weights keep the preset's task, denoise (restore names outputs by it); model.task=deblur" in (
        capsys.readouterr().err
    )
    raw["model"]["task"] = "deblur"
    assert Trainer(config_from_dict(raw)).model.descriptor.task == "deblur"
    assert "model.task=deblur" not in capsys.readouterr().err


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    _train(_raw_config(tmp_path, "whole"))
    # the same run in two sessions, with data-loader workers this time
    workers = {"num_workers": 2}
    _train(_raw_config(tmp_path, "split", data=workers, run={"stop_at": 3}))
    assert _state(tmp_path, "split")["step"] == 3
    summary = _train(_raw_config(tmp_path, "split", data=workers))
    assert summary["steps"] == 6
    whole, split = _state(tmp_path, "whole"), _state(tmp_path, "split")
    for part in ("model", "ema"):
        assert whole[part].keys() == split[part].keys()
        for key in whole[part]:
            assert torch.equal(whole[part][key], split[part][key]), (part, key)
    for a, b in zip(whole["optimizer"]["state"].values(), split["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "runs" / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["resumed_from"] is not None for r in log if r["kind"] == "start"] == [False, True]
    # the weights file holds the EMA weights and says so; its validation is the final one
    weights = tmp_path / "runs" / "whole" / "model.safetensors"
    meta = read_metadata(weights)
    assert meta["weights"] == "ema" and meta["training"]["steps"] == 6
    assert meta["training"]["validation"]["step"] == 6 and meta["training"]["validation"]["Val"]["psnr"] > 10
    recipe = meta["training"]["recipe"]  # the file says how it was trained, without the run's config
    assert recipe["run"] == "whole" and recipe["degrade"] == {"task": "sr", "scale": 2}
    assert recipe["patches"] == [[0, 16, 2]] and (recipe["lr"], recipe["loss"]) == (1e-3, "l1")
    model = model_from_file(weights)
    assert all(torch.equal(v, whole["ema"][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_step_writes_a_checkpoint_and_the_rerun_resumes_exactly(
    tmp_path, monkeypatch, capsys, signum
):
    """SIGTERM (a scheduler's preemption) killed the run with no checkpoint, and Ctrl-C lost every step
    since the last one (checkpoint.every defaults to 5000)."""
    no_val = {"sets": []}
    _train(_raw_config(tmp_path, "whole", val=no_val))
    rare = {"every": 100}
    loss = Trainer._validate

    def signalled(self, model):  # at step 3, in the middle of the session
        os.kill(os.getpid(), signum)
        return loss(self, model)

    monkeypatch.setattr(Trainer, "_validate", signalled)
    path = _write(
        tmp_path, _raw_config(tmp_path, "split", val={"sets": ["Val"], "every": 3}, checkpoint=rare)
    )
    assert main(["train", str(path)]) == 128 + signum
    name = signal.Signals(signum).name
    assert f"{name} at step 3: checkpoint written; rerun the command to resume" in capsys.readouterr().err
    assert _state(tmp_path, "split")["step"] == 3
    monkeypatch.setattr(Trainer, "_validate", loss)
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)  # handlers given back
    _train(_raw_config(tmp_path, "split", val=no_val, checkpoint=rare))
    whole, split = _state(tmp_path, "whole"), _state(tmp_path, "split")
    assert all(torch.equal(whole["model"][k], split["model"][k]) for k in whole["model"])


def test_a_run_killed_while_writing_its_last_weights_writes_them_when_rerun(tmp_path, monkeypatch):
    """The state was written before the weights: killed between the two, a rerun found the run finished
    ("nothing to do") and the weights file stayed the previous checkpoint's for good."""
    import irformers.engine.trainer as trainer

    no_val = {"sets": []}
    _train(_raw_config(tmp_path, "whole", val=no_val))
    save_weights = trainer.save_weights

    def killed_at_the_end(path, model, metadata, **kwargs):
        if metadata["training"]["steps"] == 6:
            raise KeyboardInterrupt
        save_weights(path, model, metadata, **kwargs)

    monkeypatch.setattr(trainer, "save_weights", killed_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        _train(_raw_config(tmp_path, "killed", val=no_val))
    monkeypatch.setattr(trainer, "save_weights", save_weights)
    _train(_raw_config(tmp_path, "killed", val=no_val))
    whole, killed = (
        model_from_file(tmp_path / "runs" / n / "model.safetensors") for n in ("whole", "killed")
    )
    assert all(torch.equal(v, killed.state_dict()[k]) for k, v in whole.state_dict().items())
    assert read_metadata(tmp_path / "runs" / "killed" / "model.safetensors")["training"]["steps"] == 6


@pytest.mark.skipif(os.name != "posix", reason="the run-folder lock is a POSIX record lock")
def test_a_second_training_in_a_busy_run_folder_is_refused(tmp_path, capsys):
    """Two trainings (or a killed torchrun's orphaned workers and its rerun) wrote one folder at once."""
    no_val = {"sets": []}
    _train(_raw_config(tmp_path, val=no_val, run={"stop_at": 2}))
    holder = (  # another process holding the lock, as a running training does
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.lockf(f, fcntl.LOCK_EX); "
        "f.truncate(0); f.write('4242'); f.flush(); print('held', flush=True); time.sleep(60)"
    )
    lock = str(tmp_path / "runs" / "run" / ".lock")
    proc = subprocess.Popen([sys.executable, "-c", holder, lock], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert main(["train", str(_write(tmp_path, _raw_config(tmp_path, val=no_val)))]) == 1
        assert "another training (pid 4242) is running in this run folder" in capsys.readouterr().err
        assert _state(tmp_path, "run")["step"] == 2
    finally:
        proc.kill()
        proc.wait()
    assert _train(_raw_config(tmp_path, val=no_val))["steps"] == 6  # released with its process: resumes


def test_a_state_written_by_the_folders_holder_after_start_up_is_the_one_resumed(tmp_path):
    """A training that found no state when it started, then got the folder once another had finished,
    trained from step 0 over the other's run."""
    no_val = {"sets": []}
    waiting = Trainer(config_from_dict(_raw_config(tmp_path, val=no_val)))  # no state yet
    _train(_raw_config(tmp_path, val=no_val, train={"lr": 5e-4}))  # the folder's holder, to the end
    whole = _state(tmp_path, "run")
    assert waiting.fit()["steps"] == 6  # nothing to do, not 6 steps again from scratch
    again = _state(tmp_path, "run")
    assert all(torch.equal(whole["model"][k], again["model"][k]) for k in whole["model"])


def _torchrun(*args: str) -> None:
    """Two CPU ranks under torchrun, which must both exit cleanly."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


_GLOO_TEARDOWN = """
import os, sys, torch
from irformers.engine import distributed
info = distributed.env_info()
distributed.init(info, torch.device("cpu"))
net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))
net(torch.ones(2, 3)).sum().backward()
distributed.gather(info.rank)
del net
distributed.shutdown()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
left = sum(name.startswith(("pt_gloo", "gloo")) for name in names)
open(os.path.join(sys.argv[1], f"rank{info.rank}.txt"), "w").write(f"gloo threads left: {left}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_shutdown_ends_the_gloo_threads_so_they_cannot_abort_the_exit(tmp_path):
    # A group that outlives shutdown keeps gloo threads that may free a collective's tensors while
    # the interpreter exits: std::terminate, SIGABRT, a failed run after the weights were written.
    (tmp_path / "teardown.py").write_text(_GLOO_TEARDOWN)
    _torchrun(str(tmp_path / "teardown.py"), str(tmp_path))
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "gloo threads left: 0", rank


def test_ranks_under_torchrun_agree_and_only_rank_zero_writes(tmp_path, capsys):
    raw = _raw_config(tmp_path, "ddp", data={"batch_size": 1}, train={"steps": 3}, val={"every": 0})
    raw["model"]["drop_path"] = 0.0
    (tmp_path / "ddp.yaml").write_text(json.dumps(raw))  # JSON is YAML
    _torchrun("-m", "irformers", "train", str(tmp_path / "ddp.yaml"))
    run = tmp_path / "runs" / "ddp"
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock",  # rank 0 held it
        "config.yaml",
        "log.jsonl",
        "model.safetensors",
        "train_state.pt",
    ]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in log] == ["start", "train", "train", "train", "val", "end"]  # written once
    assert log[0]["world_size"] == 2
    digests = log[-1]["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    state = load_training_state(run / "train_state.pt")
    assert len(state["rng"]) == 2
    # 2 ranks x batch 1 see the patches of one process with batch 2: the same training, up to the
    # order of floating-point sums in the gradient average
    single = _raw_config(tmp_path, "single", data={"batch_size": 2}, train={"steps": 3}, val={"every": 0})
    single["model"]["drop_path"] = 0.0
    _train(single)
    reference = _state(tmp_path, "single")["model"]
    for key, value in state["model"].items():
        torch.testing.assert_close(value, reference[key], atol=1e-5, rtol=1e-4)
    # resumed on one process, the data stream goes on where the two left it (steps 4-5: draws 6 and 7);
    # it restarted from draw 4, as if every step so far had drawn on one rank
    capsys.readouterr()
    raw["train"]["steps"] = 5
    _train(raw)
    assert "changed recipe: train.steps: 3 -> 5; processes 2 -> 1" in capsys.readouterr().err
    assert read_metadata(run / "model.safetensors")["training"]["world_sizes"] == [2, 1]  # info: "2 then 1"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in log if r["kind"] == "train"]
    assert epochs == [round(draws / 5, 3) for draws in (2, 4, 6, 7, 8)]  # 5 training images


def test_a_resumed_run_log_drops_what_the_killed_session_logged_past_its_state(tmp_path):
    """After a SIGKILL, steps logged after the last checkpoint stood twice in log.jsonl."""
    _train(_raw_config(tmp_path, val={"sets": []}, run={"stop_at": 3}))
    log = tmp_path / "runs" / "run" / "log.jsonl"
    killed = [json.dumps({"kind": "train", "step": s, "loss": 9.0}) for s in (4, 5)]
    odd = ["[1, 2]", "3", '"text"', '{"kind": "x", "step": null}']  # no records of ours: dropped, no crash
    log.write_text(log.read_text() + "\n".join(killed + odd) + '\n{"kind": "tra')  # cut off mid-line
    _train(_raw_config(tmp_path, val={"sets": []}))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert 9.0 not in [r["loss"] for r in records if r["kind"] == "train"]


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_sigterm_to_the_process_group_with_data_workers_ends_with_a_checkpoint(tmp_path):
    """A scheduler signals every process of a job: a data worker that died of it made the trainer fail
    mid-step (DataLoader worker ... is killed by signal), with no checkpoint."""
    raw = _raw_config(tmp_path, "term", train={"steps": 100_000}, val={"sets": []}, data={"num_workers": 2})
    raw["checkpoint"] = {"every": 100_000}
    (tmp_path / "term.yaml").write_text(json.dumps(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "irformers", "train", str(tmp_path / "term.yaml")]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = tmp_path / "runs" / "term" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and log.read_text().count('"train"') >= 3):
        assert time.time() < deadline and proc.poll() is None, "training did not get going"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its workers, as a scheduler does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    stopped = int(err.split("SIGTERM at step ")[1].split(":")[0])
    assert _state(tmp_path, "term")["step"] == stopped >= 3


@pytest.mark.skipif(os.name != "posix", reason="signal dispositions are POSIX")
def test_a_signal_the_process_ignores_stays_ignored_and_a_lock_error_is_a_note(tmp_path, monkeypatch, capsys):
    """nohup-style SIGINT ignoring was overridden; a file system without locks made every training fail
    as 'another training is running'."""
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        trainer = Trainer(config_from_dict(_raw_config(tmp_path, val={"sets": []})))
        original = trainer._loop

        def loop(*args):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # still ignored while training
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # noted
            return original(*args)

        trainer._loop = loop
        assert trainer.fit()["steps"] == 6
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "the run folder cannot be locked (No locks available); nothing stops" in capsys.readouterr().err


def test_sigkill_during_training_leaves_a_loadable_checkpoint(tmp_path):
    raw = _raw_config(tmp_path, "killed", train={"steps": 100_000}, val={"sets": []}, checkpoint={"every": 1})
    (tmp_path / "kill.yaml").write_text(json.dumps(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "irformers", "train", str(tmp_path / "kill.yaml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = tmp_path / "runs" / "killed"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            log = run / "log.jsonl"
            if log.is_file() and log.read_text().count('"train"') >= 8:  # in the middle of writing, mostly
                break
            time.sleep(0.05)
        else:
            pytest.fail("training did not get going")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_training_state(run / "train_state.pt")
    assert state["step"] >= 7
    model = model_from_file(run / "model.safetensors")
    # the weights are written first: killed between the two writes, they are one checkpoint ahead
    assert read_metadata(run / "model.safetensors")["training"]["steps"] in (state["step"], state["step"] + 1)
    assert model.descriptor.scale == 2
    # and the run resumes from it; a write the kill interrupted leaves a temporary file, cleaned up
    (run / ".model.safetensors.tmp-0123456789abcdef").write_bytes(b"half")
    summary = _train(_raw_config(tmp_path, "killed", train={"steps": state["step"] + 1}, val={"sets": []}))
    assert summary["steps"] == state["step"] + 1
    assert not list(run.glob(TEMP_GLOB))


@pytest.mark.parametrize(
    "train",
    [
        {
            "precision": "bf16",
            "optimizer": "adamw",
            "weight_decay": 0.01,
            "loss": "charbonnier",
            "grad_clip": 0.1,
        },
        {"precision": "fp16", "schedule": "multistep", "milestones": [1], "loss": "mse", "ema_decay": 0.0},
    ],
)
def test_precision_and_optimizer_options_train(tmp_path, train):
    raw = _raw_config(tmp_path, "opts", train={"steps": 3, **train}, val={"sets": []})
    summary = _train(raw)
    assert summary["steps"] == 3
    meta = read_metadata(tmp_path / "runs" / "opts" / "model.safetensors")
    assert meta["weights"] == ("raw" if train.get("ema_decay") == 0.0 else "ema")
    log = [json.loads(line) for line in (tmp_path / "runs" / "opts" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if r["kind"] == "train")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_the_gpu(tmp_path, precision):
    raw = _raw_config(tmp_path, precision, train={"steps": 3, "precision": precision}, run={"device": "cuda"})
    summary = _train(raw)
    assert summary["steps"] == 3 and np.isfinite(summary["validation"]["Val"]["psnr"])
    log = (tmp_path / "runs" / precision / "log.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in log]
    assert log[0]["device"] == "cuda:0"
    assert all(np.isfinite(r["loss"]) for r in log if r["kind"] == "train")


def test_random_k_steps_draw_only_choices_that_fit_the_window(tmp_path, monkeypatch):
    from irformers.models import semanir

    calls = []
    real_topk = torch.topk
    monkeypatch.setattr(torch, "topk", lambda t, k, **kw: calls.append(k) or real_topk(t, k, **kw))
    monkeypatch.setattr(semanir, "RANDOM_K_CHOICES", (3, 5, 4096))  # 4096 > 256 tokens: never drawn
    _train(_raw_config(tmp_path, "k", train={"steps": 12}, val={"sets": []}))
    assert set(calls) == {3, 5}


def test_gradient_checkpointing_gives_the_same_gradients():
    spec = {**TINY_SEMANIR, "drop_path": 0.0}
    torch.manual_seed(0)
    plain = build_model_from_config(spec)
    ckpt = build_model_from_config(spec)
    ckpt.load_state_dict(plain.state_dict())
    assert enable_grad_checkpointing(ckpt) == 1
    x = torch.rand(2, 3, 16, 16)
    for model in (plain, ckpt):
        model(x, k=16).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    assert ckpt.state_dict().keys() == plain.state_dict().keys()
    unet = build_model("hiir-t-denoise-gray")  # encoders, bottleneck, decoders, refinement: every stage
    copied = copy.deepcopy(unet)  # as the EMA copies: its own stages, not the original's
    assert len(unet.stages()) == 8 and not set(map(id, copied.stages())) & set(map(id, unet.stages()))


def test_ema_update_by_hand():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model, step=0)  # decay min(0.999, 1/10) = 0.1: 0.1 * 1 + 0.9 * 3
    assert ema.module.weight.item() == pytest.approx(2.8)
    ema.update(model, step=10_000)  # decay 0.999: 0.999 * 2.8 + 0.001 * 3
    assert ema.module.weight.item() == pytest.approx(2.8002)


def _cli_error(tmp_path, capsys, raw: dict, *extra: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(raw))
    assert main(["train", str(path), *extra, "--check"]) == 2
    err = capsys.readouterr().err.strip()
    errors = [
        line for line in err.splitlines() if ": note: " not in line
    ]  # notes on the recipe may come first
    assert len(errors) == 1, err
    return errors[0]


def test_bad_configs_and_data_fail_before_training_with_one_line(tmp_path, capsys):
    raw = _raw_config(tmp_path)
    assert main(["train", str(_write(tmp_path, raw)), "--check"]) == 0
    assert "config OK: 5 training images" in capsys.readouterr().out
    assert main(["train", str(_write(tmp_path, raw)), "--check", "train.steps=4", "run.name=after"]) == 0
    assert "runs/after" in capsys.readouterr().out  # overrides after an option: argparse refused them
    for name in ("list.txt", "a.heic", "b.heic"):  # a set of photos in a format not read: not unsaid
        (tmp_path / "data" / "train" / name).write_text("")
    assert main(["train", str(_write(tmp_path, raw)), "--check"]) == 0
    train = tmp_path / "data" / "train"
    note = f"run: note: data.train.0: {train}: skipping 3 files that are not images (.heic x2, .txt x1)"
    assert note in capsys.readouterr().err
    for name in ("list.txt", "a.heic", "b.heic"):
        (train / name).unlink()
    (tmp_path / "afile").write_text("")  # found by --check, not by a traceback at the first write
    assert (
        f"the run folder {tmp_path / 'afile' / 'run'} cannot be created ({tmp_path / 'afile'} is a file)"
        in (_cli_error(tmp_path, capsys, raw, f"run.out_dir={tmp_path / 'afile'}"))
    )
    assert "unknown key 'train.lr_'" in _cli_error(tmp_path, capsys, raw, "train.lr_=1")
    assert "unknown key 'model.kk' for preset semanir-t-sr-x2; did you mean 'model.k'?" in _cli_error(
        tmp_path, capsys, raw, "model.kk=3"
    )
    assert "model.k: expected a int" in _cli_error(tmp_path, capsys, raw, "model.k=many")
    assert "unknown model preset 'nope'" in _cli_error(tmp_path, capsys, raw, "model.preset=nope")
    assert "unknown model preset 'semanir-t-srx2'; did you mean semanir-t-sr-x2" in _cli_error(
        tmp_path, capsys, raw, "model.preset=semanir-t-srx2"
    )
    assert "upscales x2 but the data asks for x3" in _cli_error(tmp_path, capsys, raw, "data.scale=3")
    gray = _cli_error(tmp_path, capsys, raw, "data.gray=true")
    assert "takes 3 and gives 3 channels, but task 'sr' gray data gives 1" in gray
    assert gray.endswith("(choose a gray preset, or data.gray: false)")  # not "set data.gray": it is set
    assert "no such folder" in _cli_error(tmp_path, capsys, raw, "data.train=[nowhere]")
    assert "unknown dataset 'Set0'" in _cli_error(tmp_path, capsys, raw, "val.sets=[Set0]")
    paired = [
        "data.task=paired",
        "data.scale=1",
        "data.train=[{target: train, input: train}]",
        "model.l3_max_regions=1",
    ]
    assert "data.task paired validates on NAME/input/ + NAME/target/ sets only" in _cli_error(
        tmp_path, capsys, {**raw, "model": {"preset": "hiir-t-denoise-color"}}, *paired
    )  # Val holds clean images: found by --check, not by the validation after training
    gray_val = tmp_path / "data" / "GrayVal"
    gray_val.mkdir()
    write_image(gray_val / "g.png", np.zeros((32, 32), np.uint8))
    color_denoiser = {**raw, "model": {"preset": "semanir-t-denoise-color"}}
    denoise = ["data.task=denoise", "data.scale=1", "data.sigma=25", "val.sets=[GrayVal]"]
    assert "GrayVal: its images are gray, and this is a color model" in _cli_error(
        tmp_path, capsys, color_denoiser, *denoise
    )  # validated as three equal channels, a score `test` refuses to give
    assert "no training state to resume from" in _cli_error(tmp_path, capsys, raw, "--resume", str(tmp_path))
    assert "nver: no training state to resume from (expected auto, never, a run folder" in _cli_error(
        tmp_path, capsys, raw, "run.resume=nver"
    )  # a typo was read as a path, and the message did not say what the key takes
    assert "run.device: 'gpu' is not a device" in _cli_error(tmp_path, capsys, raw, "run.device=gpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    absent = f"cuda:{gpus}"  # one past the last GPU: absent on every machine
    missing = _cli_error(tmp_path, capsys, raw, f"run.device={absent}")
    assert f"needs {absent}, but this machine has" in missing
    (tmp_path / "runs" / "run").mkdir(parents=True)
    (tmp_path / "runs" / "run" / "train_state.pt").write_bytes(b"not a state")  # damaged: what to do said
    assert "not a readable training state" in (damaged := _cli_error(tmp_path, capsys, raw))
    assert damaged.endswith("; run.resume=never starts the run afresh")
    (tmp_path / "runs" / "run" / "train_state.pt").unlink()
    broken = tmp_path / "data" / "train" / "img3.png"
    broken.write_bytes(broken.read_bytes()[:100])
    assert "img3.png: not a readable image" in _cli_error(tmp_path, capsys, raw)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(json.dumps(raw))
    return path


def test_tensorboard_is_optional(tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raw = _raw_config(tmp_path, log={"tensorboard": True})
        assert "pip install tensorboard" in _cli_error(tmp_path, capsys, raw)
    else:
        pytest.skip("tensorboard is installed: nothing to refuse")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_broken_past_its_header_stops_training_with_one_line(tmp_path, capsys, workers):
    """The start checks every file's header; a JPEG cut short is found when first decoded."""
    raw = _raw_config(tmp_path, data={"num_workers": workers}, val={"sets": []})
    _, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    (tmp_path / "data" / "train" / "cut.jpg").write_bytes(jpeg.tobytes()[: jpeg.size // 2])
    (tmp_path / "c.yaml").write_text(json.dumps(raw))
    assert main(["train", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("irformers train: ") and err[-1].endswith(
        "cut.jpg: truncated or corrupt image data"
    )
    assert not any("Traceback" in line for line in err)


def test_init_from_other_scale_loads_what_fits(tmp_path, capsys):
    from irformers.engine.checkpoint import save_weights

    x2 = build_model_from_config(TINY_SEMANIR)
    save_weights(tmp_path / "x2.safetensors", x2, {"training": {"steps": 7, "seconds": 3.0}})
    raw = _raw_config(tmp_path, train={"init": str(tmp_path / "x2.safetensors")}, val={"sets": []})
    raw["model"]["preset"] = "semanir-t-sr-x3"
    raw["data"]["scale"] = 3
    raw["data"]["patch_size"] = 12
    capsys.readouterr()  # said before a run, by --check too: it was only in the run's log
    assert main(["train", str(_write(tmp_path, raw)), "--check"]) == 0
    tensors, init = len(x2.state_dict()), tmp_path / "x2.safetensors"
    note = f"train.init: 2 of the model's {tensors} tensors are not in {init} or differ in shape"
    assert note in capsys.readouterr().err
    trainer = Trainer(config_from_dict(raw))
    assert trainer.init_skipped and all(k.startswith("frame.upsample.") for k in trainer.init_skipped)
    loaded = trainer.model.state_dict()
    for key, value in x2.state_dict().items():
        if key not in trainer.init_skipped:
            assert torch.equal(loaded[key], value), key
    # the fine-tuned weights will carry the summary of the run they started from
    assert trainer.init_training == {"steps": 7, "seconds": 3.0}
    # a shipped model by name: fine-tuning it on one's own data (it was "semanir-t-sr-x2: no such file")
    raw = _raw_config(tmp_path, "shipped", train={"init": "semanir-t-sr-x2"}, val={"sets": []})
    raw["model"] = {"preset": "semanir-t-sr-x2"}
    shipped = Trainer(config_from_dict(raw))
    assert shipped.init_skipped == [] and shipped.init_training["steps"] > 0
    raw["train"]["init"] = str(tmp_path / "runs" / "earlier")  # a run folder: was "no such file"
    (tmp_path / "runs" / "earlier").mkdir(parents=True, exist_ok=True)
    save_weights(tmp_path / "runs" / "earlier" / "model.safetensors", x2, {})
    with pytest.raises(
        CheckpointError, match=r"a folder, not a weights file \(its weights: .*model.safetensors\)"
    ):
        Trainer(config_from_dict(raw))
    raw["train"]["init"] = "semanir-t-sr-x3"  # a preset that ships no weights
    with pytest.raises(
        CheckpointError, match="semanir-t-sr-x3: no such file, nor a model that ships weights"
    ):
        Trainer(config_from_dict(raw))


def test_a_resumed_run_keeps_the_start_it_had(tmp_path):
    """A resume's weights took their history from the current train.init: dropping it erased the stages
    the run came from, adding one invented them, and a moved init file stopped the resume."""
    from irformers.engine.checkpoint import save_weights

    save_weights(
        tmp_path / "a.safetensors", build_model_from_config(TINY_SEMANIR), {"training": {"steps": 7}}
    )
    no_val = {"sets": []}
    _train(
        _raw_config(tmp_path, train={"init": str(tmp_path / "a.safetensors")}, val=no_val, run={"stop_at": 2})
    )
    (tmp_path / "a.safetensors").unlink()  # moved away: the resume needs it no more
    summary = _train(_raw_config(tmp_path, val=no_val, run={"stop_at": 4}))  # train.init dropped
    assert summary["init"] == {"path": str(tmp_path / "a.safetensors"), "training": {"steps": 7}}
    save_weights(
        tmp_path / "b.safetensors", build_model_from_config(TINY_SEMANIR), {"training": {"steps": 9}}
    )
    _train(_raw_config(tmp_path, "scratch", val=no_val, run={"stop_at": 2}))
    raw = _raw_config(tmp_path, "scratch", train={"init": str(tmp_path / "b.safetensors")}, val=no_val)
    assert "init" not in _train(raw)  # added on resume: not what the run started from


def test_init_from_a_foreign_pytorch_file(tmp_path):
    source = build_model_from_config(TINY_SEMANIR)
    torch.save({"params_ema": source.state_dict()}, tmp_path / "foreign.pth")  # BasicSR's layout
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}  # a DataParallel's keys
    torch.save(wrapped, tmp_path / "wrapped.pth")  # were "none of its tensors fit this model"
    for name in ("foreign.pth", "wrapped.pth"):
        trainer = Trainer(config_from_dict(_raw_config(tmp_path, train={"init": str(tmp_path / name)})))
        assert trainer.init_skipped == [] and trainer.init_training is None
        for key, value in source.state_dict().items():
            assert torch.equal(trainer.model.state_dict()[key], value), key


def test_a_stage_with_its_init_weights_seed_is_told_it_replays_their_patches(tmp_path, capsys):
    first = Trainer(config_from_dict(_raw_config(tmp_path, "first", val={"sets": []})))
    first.fit()
    weights = str(tmp_path / "runs" / "first" / "model.safetensors")
    capsys.readouterr()
    again = Trainer(config_from_dict(_raw_config(tmp_path, "again", train={"init": weights})))
    assert "draws the same patches again" in capsys.readouterr().err
    raw = _raw_config(tmp_path, "fresh", train={"init": weights}, run={"seed": 8})
    fresh = Trainer(config_from_dict(raw))
    assert "same patches" not in capsys.readouterr().err
    key = (0, 0, 16)  # image, draw, patch size
    assert torch.equal(first.dataset[key][0], again.dataset[key][0])
    assert not torch.equal(first.dataset[key][0], fresh.dataset[key][0])


TINY_UNET = {"dims": [8, 16, 16, 16], "num_heads": [1, 1, 1, 1], "window_size": 8, "cpb_hidden": 16}


@pytest.mark.parametrize(
    "preset, data, val",
    [
        ("semanir-t-denoise-gray", {"task": "denoise", "sigma_range": [0, 50], "gray": True}, {"sigma": 25}),
        ("semanir-t-jpeg-color", {"task": "jpeg", "quality_range": [10, 40]}, {"quality": 10}),
        ("demosaic", {"task": "demosaic"}, {}),
        ("semanir-t-denoise-color", {"task": "paired", "train": ["Pairs"]}, {"sets": ["Pairs"]}),
        (
            "semanir-t-denoise-color",  # an all-in-one mix, with a progressive patch schedule
            {
                "task": "paired",
                "train": [
                    {"target": "Pairs", "weight": 2},
                    {"target": "train", "degrade": {"task": "jpeg", "quality": 20}},
                ],
                "progressive": [
                    {"start": 0, "patch_size": 16, "batch_size": 2},
                    {"start": 1, "patch_size": 32, "batch_size": 1},
                ],
            },
            {"sets": ["Pairs"]},
        ),
    ],
    ids=["denoise-blind-gray", "jpeg-blind-color", "demosaic", "paired", "mix-progressive"],
)
def test_every_task_trains_and_validates(tmp_path, preset, data, val):
    _images(tmp_path / "data" / "train", 3, 40)
    _images(tmp_path / "data" / "Val", 1, 32)
    _images(tmp_path / "data" / "Pairs" / "target", 3, 40)
    _images(tmp_path / "data" / "Pairs" / "input", 3, 40)
    model = {"preset": preset, **TINY_UNET}
    if preset == "demosaic":  # no tiny demosaicking preset: the gray denoiser's network, mosaic in, RGB out
        model = {
            **model,
            "preset": "semanir-t-denoise-gray",
            "task": "demosaic",
            "out_channels": 3,
            "bayer_input": True,
        }
    raw = _raw_config(
        tmp_path,
        train={"steps": 2, "warmup_steps": 1},
        data={"train": ["train"], "scale": 1, "patch_size": 16, **data},
        val={"sets": ["Val"], **val},
    )
    raw["model"] = model
    summary = _train(raw)
    scores = summary["validation"][raw["val"]["sets"][0]]
    assert (
        summary["steps"] == 2
        and np.isfinite(scores["psnr"])
        and ("psnr_b" in scores) == (data["task"] == "jpeg")
    )
