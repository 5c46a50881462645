"""Weights files: self-describing round trip, foreign layouts, refusals."""

import os
import pickle

import pytest
import torch

from irformers.engine.checkpoint import (
    CheckpointError,
    load_weights,
    model_from_file,
    read_metadata,
    read_state_dict,
    save_weights,
)
from irformers.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("semanir-t-sr-x2").eval()


def test_weights_file_rebuilds_its_model(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(path, model, metadata={"training": {"steps": 3}})
    assert read_metadata(path)["training"] == {"steps": 3}
    loaded = model_from_file(path)
    assert loaded.descriptor == model.descriptor and not loaded.training
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # shareable like any file, not 0600


@pytest.mark.parametrize("layout", ["params_ema", "params", "state_dict", "module_prefix", "plain"])
def test_foreign_state_dicts_load_through_the_converter(model, tmp_path, layout):
    state = model.state_dict()
    raw = {
        "params_ema": {"params_ema": state, "params": {k: torch.zeros_like(v) for k, v in state.items()}},
        "params": {"params": state},
        "state_dict": {"state_dict": state, "epoch": 3},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "plain": state,
    }[layout]
    path = tmp_path / "foreign.pth"
    torch.save(raw, path)
    fresh = build_model("semanir-t-sr-x2")
    load_weights(fresh, path)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key  # params_ema preferred over params


def test_wrong_scale_or_architecture_is_one_clear_error(model, tmp_path):
    path = tmp_path / "x2.safetensors"
    save_weights(path, model)
    for other in ("semanir-t-sr-x4", "hiir-t-sr-x2"):
        with pytest.raises(CheckpointError) as info:
            load_weights(build_model(other), path)
        message = str(info.value)
        assert "x2.safetensors" in message and "does not fit" in message and "\n" not in message


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch, recwarn):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": _RunsCode()}, f, protocol=4)  # a bare pickle: torch warned about its protocol
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd))
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused") as info:
        load_weights(build_model("semanir-t-sr-x2"), path)
    assert calls == [] and "\n" not in str(info.value) and "\x1b" not in str(info.value)  # not torch's page
    assert [str(w.message) for w in recwarn] == []  # the one line says it all


def test_files_that_are_not_weights_say_so(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match=r"photo\.png: not a weights file \(expected \.safetensors"):
        read_state_dict(image)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights either")
    with pytest.raises(CheckpointError, match=r"junk\.pth: (refused|damaged)") as info:
        read_state_dict(junk)
    assert "\n" not in str(info.value)


def test_save_weights_writes_what_readers_take_it_for(model, tmp_path):
    """A .pth name held safetensors bytes (refused on load as a code-running pickle), metadata could
    replace the config that rebuilds the network, and an upper-case suffix read as foreign weights."""
    with pytest.raises(CheckpointError, match=r"e\.pth: weights are written as \.safetensors"):
        save_weights(tmp_path / "e.pth", model)
    with pytest.raises(CheckpointError, match="metadata key 'config' is the model's own"):
        save_weights(tmp_path / "c.safetensors", model, metadata={"config": {"arch": "hiir"}})
    assert not list(tmp_path.iterdir())
    upper = tmp_path / "A.SAFETENSORS"
    save_weights(upper, model)
    assert read_metadata(upper)["config"] == model.config
    assert model_from_file(upper).config == model.config
    assert model_from_file(upper, device="auto").config == model.config  # torch: "auto" is no device
    with pytest.raises(CheckpointError, match=r"^device: 'cuda:7' needs cuda:7"):
        model_from_file(upper, device="cuda:7")


def test_a_training_state_points_to_its_runs_weights(model, tmp_path):
    """info called a train_state.pt foreign weights, and --arch then loaded its raw (not EMA) weights."""
    from irformers.engine.checkpoint import load_training_state, save_training_state
    from irformers.inference import load_model

    path = tmp_path / "run" / "train_state.pt"
    path.parent.mkdir()
    state = {"version": 1, "step": 5, "model": model.state_dict(), "optimizer": {}, "config": {}}
    save_training_state(path, state)
    with pytest.raises(
        CheckpointError, match=r"train_state\.pt: a training state \(for resuming\), not weights$"
    ):
        load_model(path)  # without --arch it was "foreign weights; pass --arch PRESET"
    save_weights(path.parent / "model.safetensors", model)
    with pytest.raises(
        CheckpointError, match=r"not weights; its run's weights are .*run/model\.safetensors$"
    ):
        read_state_dict(path)  # named only where the file is
    # damaged, or holding an object: one short line, not torch's advice (on loading it unsafely, too)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=r"not a readable training state \(RuntimeError: .*directory\)$"
    ):
        load_training_state(path)
    torch.save({"step": 1, "thing": pickle.PickleError()}, path)  # an object weights_only refuses
    with pytest.raises(
        CheckpointError, match=r"\(refused: loading it would need to run code, or it is damaged\)$"
    ):
        load_training_state(path)


def test_damaged_and_foreign_files_are_refused(model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(path, model)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: not a readable"):
        model_from_file(truncated)
    pickled = tmp_path / "cut.pth"
    torch.save(model.state_dict(), pickled)
    pickled.write_bytes(pickled.read_bytes()[: pickled.stat().st_size // 2])  # no zip directory
    with pytest.raises(CheckpointError, match=r"cut\.pth: damaged or not a PyTorch weights file") as info:
        read_state_dict(pickled)
    assert str(info.value).endswith("directory)")  # torch's paragraph of advice after it is left out
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    with pytest.raises(CheckpointError, match="no irformers config"):
        model_from_file(bare)
    load_weights(build_model("semanir-t-sr-x2"), bare)  # still loadable into a model built by name
