"""Training runs lose nothing and are never silently wrong: run directories, interrupts, seeding, resume, --init.

Every run here is the real ``aird distill`` path (run directory, head cache, checkpoints, signals) on the
tiny synthetic training set with the light student (milliseconds a step), see distill_stub.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distill"))
from distill_stub import stub  # noqa: E402
from tiny import synthetic_set, tiny_config, tiny_settings  # noqa: E402

import aird.distill.run as run  # noqa: E402
from aird import cli  # noqa: E402
from aird.config import from_dict  # noqa: E402
from aird.distill.config import ExperimentConfig  # noqa: E402
from aird.distill.run import RunDirError, run_experiment  # noqa: E402
from aird.distill.trainer import Trainer, TrainingError, load_checkpoint, save_checkpoint  # noqa: E402
from aird.errors import ConfigError, ModelFileError, OutputError  # noqa: E402
from aird.models.heads import fit_cosine_head  # noqa: E402
from aird.models.registry import get_model  # noqa: E402
from aird.models.student import save_student  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STUB = Path(__file__).with_name("distill_stub.py")
LIGHT = {"model": "lr_light", "input_size": 16}


def light(out: Path, **train) -> dict:
    return tiny_settings(out, student=LIGHT, **{"epochs": 100, "max_steps": 12, "checkpoint_every": 5, **train})


def write_config(path: Path, settings: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{key} differs between {a} and {b}"


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """``aird distill`` in this process on the synthetic set, with a cache of its own."""
    monkeypatch.setenv("AIRD_CACHE", str(tmp_path / "cache"))
    stub(monkeypatch.setattr)
    return monkeypatch


# -- 1. run directories ---------------------------------------------------------------------------------


def test_second_run_into_the_same_directory_is_refused_and_loses_nothing(stubbed, tmp_path, capsys):
    out = tmp_path / "run"
    # run_in_subprocesses (benchmarks) writes the config into the run directory first: not a previous run
    config = write_config(out / "experiment.yaml", light(out))
    assert cli.main(["distill", "--quiet", "--config", str(config)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"checkpoint.pt", "student.safetensors", "log.jsonl", "config.json"} <= set(before)

    other = write_config(tmp_path / "b.yaml", light(out, lr=0.02))
    assert cli.main(["distill", "--quiet", "--config", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aird: error: ")
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # untouched

    # --overwrite starts over: one run's log, the new config
    assert cli.main(["distill", "--quiet", "--overwrite", "--config", str(other)]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 0.02


def test_resume_and_overwrite_exclude_each_other(stubbed, tmp_path):
    cfg = from_dict(ExperimentConfig, light(tmp_path / "run"))
    with pytest.raises(ConfigError, match="--resume .* --overwrite"):
        run_experiment(cfg, resume=True, overwrite=True, progress=False)
    with pytest.raises(SystemExit):  # argparse: not allowed together
        cli.main(["distill", "--resume", "--overwrite", "--config", "x.yaml"])


def test_run_dir_is_checked_before_any_data_work(stubbed, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an earlier run")

    def no_data():
        raise AssertionError("training data built before the run directory was checked")

    stub(stubbed.setattr, on_data=no_data)
    with pytest.raises(RunDirError, match="already holds a run"):
        run_experiment(from_dict(ExperimentConfig, light(out)), progress=False)
    assert (out / "checkpoint.pt").read_bytes() == b"an earlier run"


# -- 4. interrupts: a real signal at a random moment, then --resume, equals the uninterrupted run ---------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: the same experiment trained without a break (in this process)."""
    tmp = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRD_CACHE", str(tmp / "cache"))
        stub(mp.setattr)
        run_experiment(from_dict(ExperimentConfig, light(tmp / "run", max_steps=40)), progress=False)
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_at_a_random_moment_then_resume_equals_the_uninterrupted_run(
    uninterrupted, stubbed, tmp_path, signum, code
):
    out = tmp_path / "moved" / "run"  # another run directory than the reference's: out_dir is not config
    config = write_config(tmp_path / "exp.yaml", light(out, max_steps=40))
    env = {**os.environ, "AIRD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(STUB), str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # a random step of the first half, then a random moment within a step (forward, backward, optimizer
    # step, checkpoint write), however fast this machine trains
    after = random.randint(2, 20)
    log, lines = out / "log.jsonl", []
    while proc.poll() is None and len(lines) < after:
        time.sleep(0.002)
        text = log.read_text() if log.is_file() else ""
        lines = text[: text.rfind("\n") + 1].splitlines()  # whole lines only: the run is writing
    assert len(lines) >= after, f"the run ended before step {after}: {proc.communicate()[1][-2000:]}"
    step_s = (json.loads(lines[-1])["elapsed_s"] - json.loads(lines[0])["elapsed_s"]) / (len(lines) - 1)
    delay = random.uniform(0.0, step_s)
    time.sleep(delay)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    where = f"(signal {signum} {delay:.3f} s after step {len(lines)})"
    assert proc.returncode == code, f"{where} exit {proc.returncode}: {stderr[-2000:]}"
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "continue with --resume" in stdout
    stopped = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 2 <= stopped < 40, where
    assert not (out / "student.safetensors").exists()

    # resume (in this process): the same student, bit for bit, BN statistics included
    assert cli.main(["distill", "--quiet", "--resume", "--config", str(config)]) == 0
    assert_same_tensors(uninterrupted / "student.safetensors", out / "student.safetensors")
    assert "bn.running_mean" in tensors(out / "student.safetensors")  # BN statistics were compared too
    assert_same_tensors(uninterrupted / "student_head.safetensors", out / "student_head.safetensors")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 41)), where  # each step logged once


def test_signal_stops_at_a_step_boundary_with_a_consistent_checkpoint(tmp_path):
    data = synthetic_set()
    torch.manual_seed(0)
    trainer = Trainer(
        tiny_config(tmp_path, student=LIGHT, max_steps=8),
        data,
        get_model("lr_light"),
        fit_cosine_head(data.teacher, data.labels, steps=5),
        tmp_path,
        progress=False,
    )
    states = {}

    def on_step(step: int) -> None:
        states[step] = {k: v.clone() for k, v in trainer.model.student.state_dict().items()}
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: only a flag; the loop leaves after this step

    with pytest.raises(KeyboardInterrupt, match="interrupted at step 3") as err:
        trainer.fit(on_step=on_step)
    assert err.value.exit_code == 143
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 3 and max(states) == 3
    for key, value in state["student"].items():  # weights and BN statistics of exactly step 3
        assert torch.equal(value, states[3][key]), key
    assert int(state["student"]["bn.num_batches_tracked"]) == 3


# -- 5. reproducibility ---------------------------------------------------------------------------------


def test_cold_and_warm_head_cache_give_the_same_student(stubbed, tmp_path):
    cold = run_experiment(from_dict(ExperimentConfig, light(tmp_path / "cold", max_steps=3)), progress=False)
    assert len(list((tmp_path / "cache" / "heads").iterdir())) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("the head should come from the cache")

    stubbed.setattr(run, "fit_cosine_head", no_fit)
    warm = run_experiment(from_dict(ExperimentConfig, light(tmp_path / "warm", max_steps=3)), progress=False)
    assert_same_tensors(cold / "student.safetensors", warm / "student.safetensors")


def test_head_fit_leaves_the_global_rng_alone():
    data = synthetic_set()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = fit_cosine_head(data.teacher, data.labels, steps=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = fit_cosine_head(data.teacher, data.labels, steps=3, seed=7)
    assert torch.equal(a.weight, b.weight)


# -- 8. --init and the student file's metadata ------------------------------------------------------------


def test_init_from_another_architecture_is_refused_before_any_work(stubbed, tmp_path):
    other = tmp_path / "light.safetensors"
    save_student(other, get_model("lr_light"), "lr_light", 16)

    def no_data():
        raise AssertionError("training data built before --init was checked")

    stub(stubbed.setattr, on_data=no_data)
    cfg = from_dict(ExperimentConfig, tiny_settings(tmp_path / "run"))  # student.model: dlib_resnet_bn
    with pytest.raises(ConfigError, match="'lr_light' student, but student.model is 'dlib_resnet_bn'"):
        run_experiment(cfg, init=other, progress=False)


def test_init_continues_from_the_file_and_saves_method_and_run(stubbed, tmp_path):
    first = run_experiment(from_dict(ExperimentConfig, light(tmp_path / "first", max_steps=2)), progress=False)
    cfg = from_dict(ExperimentConfig, {**light(tmp_path / "second", max_steps=1), "method": "cosine"})
    second = run_experiment(cfg, init=first / "student.safetensors", progress=False)
    with safe_open(str(second / "student.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["model"] == "lr_light" and meta["method"] == "cosine" and meta["run"] == "second"


# -- 9. resume: a moved run, which keys differ, a checkpoint of the wrong shape ---------------------------


def interrupted_trainer(run_dir: Path, **train) -> Trainer:
    data = synthetic_set()
    torch.manual_seed(0)
    head = fit_cosine_head(data.teacher, data.labels, steps=5)
    return Trainer(
        tiny_config(run_dir, student=LIGHT, **train), data, get_model("lr_light"), head, run_dir, progress=False
    )


def test_a_moved_run_directory_resumes(tmp_path):
    first = interrupted_trainer(tmp_path / "old", max_steps=4)
    first.fit()
    shutil.move(tmp_path / "old", tmp_path / "new")
    again = interrupted_trainer(tmp_path / "new", max_steps=4)
    again.load_state(load_checkpoint(tmp_path / "new" / "checkpoint.pt"), tmp_path / "new" / "checkpoint.pt")
    assert again.step == 4


def test_config_mismatch_names_each_differing_key(tmp_path):
    first = interrupted_trainer(tmp_path, max_steps=1)
    first.fit()
    other = interrupted_trainer(tmp_path, max_steps=1, lr=0.01, queue_size=8)
    with pytest.raises(TrainingError) as err:
        other.load_state(load_checkpoint(first.checkpoint_path), first.checkpoint_path)
    message = str(err.value)
    assert "train.lr: 0.005 in checkpoint, 0.01 now" in message
    assert "train.queue_size: 16 in checkpoint, 8 now" in message
    assert "out_dir" not in message and str(first.checkpoint_path) in message


def test_checkpoint_of_the_wrong_shape_is_a_one_line_error(tmp_path):
    first = interrupted_trainer(tmp_path, max_steps=1)
    first.fit()
    state = load_checkpoint(first.checkpoint_path)
    state["student"]["embed.weight"] = torch.zeros(64, 128)
    save_checkpoint(first.checkpoint_path, state)
    again = interrupted_trainer(tmp_path, max_steps=1)
    with pytest.raises(ModelFileError) as err:
        again.load_state(load_checkpoint(first.checkpoint_path), first.checkpoint_path)
    message = str(err.value)
    assert "\n" not in message and str(first.checkpoint_path) in message and "student.embed.weight" in message


# -- atomic checkpoints (a promise that held before issue 11; kept proven here) ---------------------------


def test_a_checkpoint_write_that_fails_half_way_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "aird-checkpoint-v1", "step": 5})

    def disk_full(obj, f):
        Path(f).write_bytes(b"PK\x03\x04half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        save_checkpoint(path, {"format": "aird-checkpoint-v1", "step": 6})
    assert load_checkpoint(path)["step"] == 5
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
