"""The training loop: real faces lower the loss, resume is exact, DDP ranks agree, bad input is clear."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import synthetic_set, tiny_config, tiny_settings  # noqa: E402

from aird.config import from_dict, load_yaml  # noqa: E402
from aird.data.align import align_settings_for  # noqa: E402
from aird.data.chips import align_images  # noqa: E402
from aird.data.degrade import stable_seed  # noqa: E402
from aird.data.lfw import LFW  # noqa: E402
from aird.distill.config import ExperimentConfig, load_experiment  # noqa: E402
from aird.distill.data import TrainingSet  # noqa: E402
from aird.distill.trainer import (  # noqa: E402
    Distiller,
    Trainer,
    TrainingError,
    TrainingInterrupted,
    epoch_order,
    load_checkpoint,
)
from aird.errors import ConfigError, ModelFileError  # noqa: E402
from aird.models.embedder import embed_chips  # noqa: E402
from aird.models.heads import fit_cosine_head  # noqa: E402
from aird.models.registry import get_model  # noqa: E402
from aird.models.teacher import DlibTeacher  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_set(data_root) -> TrainingSet:
    """48 real LFW faces of 12 people outside folds 1-5, with the real teacher's features."""
    lfw = LFW(data_root)
    test_people = lfw.fold_identities([1, 2, 3, 4, 5])
    groups = [
        items[:4]
        for person, items in lfw.folder().by_identity().items()
        if person not in test_people and len(items) >= 4
    ][:12]
    paths = [it.path for g in groups for it in g]
    labels = np.repeat(np.arange(len(groups)), 4)
    chips = align_images(paths, align_settings_for("lfw"), progress=False, workers=1)
    teacher = DlibTeacher("torch")
    return TrainingSet(
        chips.chips,
        labels,
        chips.digests,
        embed_chips(teacher, chips, progress=False),
        embed_chips(teacher, chips, progress=False, flip=True),
        [g[0].identity for g in groups],
    )


def make_trainer(cfg: ExperimentConfig, data: TrainingSet, run_dir: Path) -> Trainer:
    torch.manual_seed(0)
    head = fit_cosine_head(data.teacher, data.labels, steps=20)
    return Trainer(cfg, data, get_model(cfg.student.model), head, run_dir, progress=False)


@pytest.mark.data
@pytest.mark.slow
def test_tiny_distillation_on_real_faces_lowers_the_loss(real_set, tmp_path):
    trainer = make_trainer(tiny_config(tmp_path, epochs=4), real_set, tmp_path)
    trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == trainer.total_steps == 24
    first, last = np.mean([r["loss"] for r in log[:4]]), np.mean([r["loss"] for r in log[-4:]])
    assert last < first, (first, last)
    assert {"cls", "ild", "rld"} <= set(log[0])
    assert (tmp_path / "checkpoint.pt").is_file()


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    data = synthetic_set()
    whole = make_trainer(tiny_config(tmp_path / "whole", max_steps=6), data, tmp_path / "whole")
    whole.fit()

    cfg = tiny_config(tmp_path / "cut", max_steps=6)
    first = make_trainer(cfg, data, tmp_path / "cut")

    def stop(step: int) -> None:
        if step == 3:  # a real Ctrl-C; the loop stops at the next step boundary
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="interrupted at step 3") as err:
        first.fit(on_step=stop)
    assert err.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back
    second = make_trainer(cfg, data, tmp_path / "cut")
    second.load_state(load_checkpoint(second.checkpoint_path), second.checkpoint_path)
    assert second.step == 3
    second.fit()
    for (name, a), b in zip(whole.model.student.state_dict().items(), second.model.student.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(whole.queue, second.queue)


def test_bf16_amp_on_cpu_trains_with_fp32_heads_and_losses(tmp_path):
    trainer = make_trainer(tiny_config(tmp_path, max_steps=2, amp="on"), synthetic_set(), tmp_path)
    seen = []
    trainer.model.student.register_forward_hook(lambda m, i, out: seen.append(("student", out.dtype)))
    trainer.model.student_head.register_forward_hook(lambda m, i, out: seen.append(("head", out.dtype)))
    trainer.fit()
    # the student itself runs in bf16 (the speed-up); its head and the losses see fp32
    assert ("student", torch.bfloat16) in seen and ("head", torch.float32) in seen
    assert ("head", torch.bfloat16) not in seen
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(r["loss"]) for r in log)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    data = synthetic_set()
    t = make_trainer(tiny_config(tmp_path, max_steps=1), data, tmp_path)
    t.fit()
    other = make_trainer(tiny_config(tmp_path, max_steps=1, lr=0.1), data, tmp_path)
    with pytest.raises(TrainingError, match="another config"):
        other.load_state(load_checkpoint(t.checkpoint_path), t.checkpoint_path)


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint", b"PK\x03\x04broken zip"])
def test_corrupted_checkpoint_gives_clear_error(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a readable aird checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_nan_loss_stops_with_clear_message(tmp_path):
    trainer = make_trainer(tiny_config(tmp_path, max_steps=2), synthetic_set(), tmp_path)
    trainer.teacher[:] = float("nan")
    trainer.teacher_flip[:] = float("nan")
    with pytest.raises(TrainingError, match="loss became nan at step 0"):
        trainer.fit()


def test_teacher_head_stays_frozen_in_eval_mode():
    head = fit_cosine_head(np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 2, steps=2)
    d = Distiller(torch.nn.Linear(4, 4), fit_cosine_head(np.eye(4), np.arange(4), steps=1), head, torch.nn.Identity())
    d.train()
    assert d.student.training and not d.teacher_head.training
    assert not any(p.requires_grad for p in d.teacher_head.parameters())


def test_bad_config_names_the_bad_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'; valid keys: .*lr") as err:
        load_experiment(path)
    assert str(path) in str(err.value)
    path.write_text("name: x\nmethod: aird\nlosses:\n  kd: {weight: 1}\n")
    with pytest.raises(ConfigError, match="no loss term 'kd'"):
        load_experiment(path)
    path.write_text("name: x\nmethod: aird\nlosses:\n  rld: {tau: 0.1, centre: true}\n")
    with pytest.raises(ConfigError, match="losses.rld: unknown key 'centre' .*valid keys: tau, center, weight"):
        load_experiment(path)
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(ExperimentConfig, path)


@pytest.mark.parametrize("config", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(config):
    load_experiment(config)


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(__file__).with_name("ddp_worker.py")),
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's aird, not an installed one
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    start = get_model("dlib_resnet_bn").state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a if a[k].is_floating_point()), "DDP run did not train"


def test_frozen_bn_student_keeps_its_statistics():
    student = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    head = fit_cosine_head(np.eye(4), np.arange(4), steps=1)
    d = Distiller(student, fit_cosine_head(np.eye(4), np.arange(4), steps=1), head, torch.nn.Identity(), freeze_bn=True)
    d.train()
    assert d.student.training and not student[1].training
    before = student[1].running_mean.clone()
    student(torch.randn(8, 4) + 5)
    assert torch.equal(before, student[1].running_mean)


@pytest.mark.slow
def test_runs_in_subprocesses_report_which_run_failed(tmp_path):
    from aird.config import from_dict
    from aird.distill.run import run_in_subprocesses

    cfgs = [
        from_dict(
            ExperimentConfig,
            {
                "name": f"bad-{s}",
                "data": {"split": s, "data_root": str(tmp_path / "nowhere")},
                "out_dir": str(tmp_path / s),
            },
        )
        for s in ("A", "B")
    ]
    with pytest.raises(RuntimeError, match="training bad-A split A failed .*training bad-B split B failed"):
        run_in_subprocesses(cfgs, jobs=2, quiet=True)
    assert (tmp_path / "A" / "experiment.yaml").is_file()  # each process got its own config file


def saved_bridge(tmp_path: Path, side: int) -> tuple[torch.nn.Module, Path]:
    """A random lr_light bridge student reading ``side`` px, saved as a student file."""
    from aird.models.student import save_student

    torch.manual_seed(1)
    bridge = get_model("lr_light", input_size=side).eval()
    save_student(tmp_path / "bridge.safetensors", bridge, "lr_light", side, method="aird", run="bridge")
    return bridge, tmp_path / "bridge.safetensors"


def test_bridge_student_gives_f_t_of_the_same_lr_face_and_stays_frozen(tmp_path):
    """Bridge distillation: the frozen bridge student's embedding of each LR face is the target f_t."""
    from aird.data.degrade import to_network_input
    from aird.models.embedder import faces_to_tensor

    bridge, bridge_file = saved_bridge(tmp_path, 20)
    settings = tiny_settings(tmp_path / "run", student={"model": "lr_resnet", "input_size": 16}, max_steps=2)
    settings["bridge"] = {"student": str(bridge_file)}
    trainer = make_trainer(from_dict(ExperimentConfig, settings), synthetic_set(), tmp_path / "run")
    assert all(d.up is None for d in trainer.degradations.values())  # native LR faces, each network resizes them itself

    # Faces of two sides, as the training degradation draws them.
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, (s, s, 3), dtype=np.uint8) for s in (12, 16, 20, 8)]
    x, f_t, _ = trainer._bridge_batch(faces, torch.zeros(4, dtype=torch.long), 16, torch.randn(4, 128))
    assert torch.equal(x, faces_to_tensor(np.stack([to_network_input(f, 16) for f in faces])))
    with torch.no_grad():
        expected = bridge(faces_to_tensor(np.stack([to_network_input(f, 20) for f in faces])))
    assert torch.allclose(f_t, expected, atol=1e-5)

    # Training feeds the distiller exactly those pairs, and the bridge never changes.
    before = {k: v.clone() for k, v in trainer.bridge[0].state_dict().items()}
    batch0 = trainer._batch(0, 0)
    seen = []
    trainer.model.register_forward_pre_hook(lambda m, args: seen.append((args[0].clone(), args[1].clone())))
    trainer.fit()
    assert torch.equal(seen[0][0], batch0[0]) and torch.equal(seen[0][1], batch0[1])
    for k, v in trainer.bridge[0].state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bridge_teacher_weight_leans_the_target_towards_the_hr_teacher(tmp_path):
    """bridge.teacher_weight w: f_t points along (1 - w) u_bridge + w u_teacher, with the bridge's length."""
    _, bridge_file = saved_bridge(tmp_path, 16)
    settings = tiny_settings(tmp_path / "run", student={"model": "lr_resnet", "input_size": 16}, max_steps=2)
    faces = [np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8) for i in range(3)]
    f_hr = torch.randn(3, 128, generator=torch.Generator().manual_seed(2))
    targets = {}
    for w in (0.0, 0.5, 1.0):
        settings["bridge"] = {"student": str(bridge_file), "teacher_weight": w}
        trainer = make_trainer(from_dict(ExperimentConfig, settings), synthetic_set(), tmp_path / f"run{w}")
        targets[w] = trainer._bridge_batch(faces, torch.zeros(3, dtype=torch.long), 16, f_hr)[1]
    plain, half, hr = targets[0.0], targets[0.5], targets[1.0]
    unit = torch.nn.functional.normalize
    assert torch.allclose(half.norm(dim=1), plain.norm(dim=1), atol=1e-4)
    assert torch.allclose(unit(half, dim=1), unit(unit(plain, dim=1) + unit(f_hr, dim=1), dim=1), atol=1e-5)
    assert torch.allclose(unit(hr, dim=1), unit(f_hr, dim=1), atol=1e-5)
    for bad in ({"student": str(bridge_file), "teacher_weight": 1.5}, {"teacher_weight": 0.5}):
        with pytest.raises(ConfigError, match="teacher_weight"):
            from_dict(ExperimentConfig, {**settings, "bridge": bad})


def test_progressive_resizing_reads_each_epochs_side(tmp_path):
    """student.progressive: epoch i reads progressive[i], later epochs input_size; the face's degradation
    (its LR side, kernel, noise) is the same whatever side it is then up-sampled to."""
    settings = tiny_settings(tmp_path, student={"model": "dlib_resnet_lr", "input_size": 24, "progressive": [48, 32]})
    cfg = from_dict(ExperimentConfig, settings)
    assert [cfg.student.side_at(e) for e in range(4)] == [48, 32, 24, 24]
    trainer = make_trainer(cfg, synthetic_set(), tmp_path)
    assert [trainer._batch(e, 0)[0].shape[-1] for e in range(3)] == [48, 32, 24]
    assert sorted(trainer.degradations) == [24, 32, 48]
    assert {d.seed for d in trainer.degradations.values()} == {cfg.train.seed}
    trainer.fit()  # a step at each side trains (tiny_settings' max_steps)
    assert trainer.step > 0


def test_progressive_sides_are_checked_at_load(tmp_path):
    settings = tiny_settings(tmp_path, student={"model": "dlib_resnet_lr", "input_size": 32, "progressive": [150]})
    with pytest.raises(ConfigError, match=r"student.progressive\[0\].*24..96"):
        from_dict(ExperimentConfig, settings)


def test_bridge_to_a_missing_student_fails_at_load(tmp_path):
    settings = tiny_settings(tmp_path, student={"model": "lr_resnet", "input_size": 16})
    settings["bridge"] = {"student": str(tmp_path / "nope.safetensors")}
    with pytest.raises(ConfigError, match="bridge.student.*not found"):
        from_dict(ExperimentConfig, settings)


def test_bridge_mixup_blends_a_share_of_the_chips_and_unlabels_them(tmp_path):
    """bridge.mixup: the blended faces are convex blends of two chips of the batch, labelled -1, drawn the
    same way on every call (seeded by face and epoch); mixup needs a bridge and no HR-teacher mixing."""
    _, bridge_file = saved_bridge(tmp_path, 16)
    settings = tiny_settings(tmp_path / "run", student={"model": "lr_resnet", "input_size": 16}, max_steps=2)
    settings["bridge"] = {"student": str(bridge_file), "mixup": {"prob": 0.5, "alpha": 1.0}}
    trainer = make_trainer(from_dict(ExperimentConfig, settings), synthetic_set(), tmp_path / "run")
    chips = trainer.data.chips[:16].astype(np.int16)
    idx = np.arange(16)
    out, blended = trainer._mixup(trainer.data.chips[:16], idx, epoch=0)
    again, blended_again = trainer._mixup(trainer.data.chips[:16], idx, epoch=0)
    assert np.array_equal(out, again) and np.array_equal(blended, blended_again)
    assert 0 < blended.sum() < 16  # about half of them
    assert np.array_equal(out[~blended], trainer.data.chips[:16][~blended])
    for k in np.flatnonzero(blended):  # out[k] = lam chip_k + (1 - lam) chip_j for some other j and lam in [0, 1]
        fits = []
        for j in range(16):
            if j == k or np.array_equal(chips[j], chips[k]):
                continue
            d = (chips[k] - chips[j]).astype(np.float64).ravel()
            lam = float(np.clip(d @ (out[k].astype(np.float64).ravel() - chips[j].ravel()) / (d @ d), 0, 1))
            fits.append(np.abs(lam * chips[k] + (1 - lam) * chips[j] - out[k]).max())
        assert min(fits) <= 1.0
    assert not np.array_equal(trainer._mixup(trainer.data.chips[:16], idx, epoch=1)[1], blended)  # new draws each epoch

    # In a training batch, exactly the blended faces lose their label.
    cfg = trainer.cfg.train
    batch_idx = epoch_order(len(trainer.data), cfg.seed, 0)[: cfg.batch_size]
    chips_in = trainer.data.chips[batch_idx]
    flips = np.array(
        [np.random.default_rng(stable_seed("flip", cfg.seed, 0, int(i))).random() < 0.5 for i in batch_idx]
    )
    chips_in = np.where(flips[:, None, None, None], chips_in[:, :, ::-1], chips_in)
    expected_blend = trainer._mixup(chips_in, batch_idx, 0)[1]
    labels = trainer._batch(0, 0)[2]
    original = torch.from_numpy(trainer.data.labels[batch_idx])
    assert torch.equal(labels, torch.where(torch.from_numpy(expected_blend), -1, original))
    trainer.fit()  # blended batches train

    for bad in (
        {"mixup": {"prob": 0.5}},  # no bridge
        {"student": str(bridge_file), "teacher_weight": 0.5, "mixup": {"prob": 0.5}},
    ):
        with pytest.raises(ConfigError, match="mixup"):
            from_dict(ExperimentConfig, {**settings, "bridge": bad})
    with pytest.raises(ConfigError, match="mixup.prob"):
        from_dict(ExperimentConfig, {**settings, "bridge": {"student": str(bridge_file), "mixup": {"prob": 2}}})
