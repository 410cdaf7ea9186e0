"""One YAML per experiment (``configs/*.yaml``), validated into these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aird.config import load_yaml
from aird.data.degrade import Degradation
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.distill.losses import LOSSES
from aird.distill.methods import method_terms
from aird.errors import ConfigError


@dataclass
class StudentConfig:
    model: str = "dlib_resnet_bn"  # registry name; initialised with the teacher's weights
    input_size: int = 150  # the LR face is up-sampled to this side before the student reads it
    # "train": BN normalises with each batch's statistics while training (and tracks LR running stats);
    # "frozen": BN keeps the restored HR statistics, so training starts from the teacher's exact function.
    bn: str = "train"


@dataclass
class DataConfig:
    data_root: str | None = None  # default: $AIRD_DATA or ../shared/data
    split: str = "A"  # A: test folds 1-5, train on everyone else; B: test folds 6-10; all: folds 1-10
    pools: list[str] = field(default_factory=lambda: ["lfw"])  # lfw, celeba, utkface
    leak_threshold: float = 0.95  # extra images this close (cosine) to a test person are dropped
    flip: bool = True  # mirror HR/LR pairs, with the teacher's target of the mirrored chip


@dataclass
class DegradationConfig:
    """Training LR synthesis: lists are drawn from per sample, [low, high] ranges likewise."""

    res: list[int] = field(default_factory=lambda: [16])
    down: list[str] = field(default_factory=lambda: ["area"])
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 0.0])
    noise_std: list[float] = field(default_factory=lambda: [0.0, 0.0])
    jpeg_quality: list[int] | None = None

    def build(self, out_size: int, seed: int) -> Degradation:
        return Degradation(
            res=tuple(self.res),
            down=tuple(self.down),
            up="bicubic",
            out_size=out_size,
            blur_sigma=tuple(self.blur_sigma),
            noise_std=tuple(self.noise_std),
            jpeg_quality=tuple(self.jpeg_quality) if self.jpeg_quality else None,
            seed=seed,
        )


@dataclass
class HeadConfig:
    scale: float = 30.0
    margin: float = 0.2
    steps: int = 100


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 64  # global: split across DDP ranks
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    head_lr: float | None = None  # default: lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 20
    clip_grad: float = 5.0
    queue_size: int = 1024  # recent teacher features kept for the relation loss
    seed: int = 0
    amp: str = "auto"  # auto (CUDA only) | on (CPU: bfloat16) | off
    threads: int | None = None  # torch CPU threads per process
    checkpoint_every: int = 100  # steps
    log_every: int = 10
    max_steps: int | None = None  # cap on total steps (smoke tests); the schedule still spans all epochs


@dataclass
class EvalSettings:
    res: list[int] = field(default_factory=lambda: [16, 12, 8])
    pairs: list[str] = field(default_factory=lambda: ["lr-lr", "hr-lr"])
    flip_fuse: bool = False  # average the embeddings of the face and its mirror


@dataclass
class ExperimentConfig:
    name: str = "aird"
    method: str = "aird"
    losses: dict = field(default_factory=dict)  # per-term overrides, e.g. {rld: {weight: 2.0, tau: 0.1}}
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    out_dir: str | None = None  # default: runs/<name>-<split>

    def __post_init__(self) -> None:
        # an unknown method, term or term option fails here, at load
        for term, spec in method_terms(self.method, self.losses).items():
            LOSSES.check_options(term, spec, f"losses.{term}", extra=("weight",))
        self.degradation.build(self.student.input_size, self.train.seed)
        if self.student.bn not in ("train", "frozen"):
            raise ConfigError(f"student.bn must be 'train' or 'frozen', got {self.student.bn!r}")
        if self.data.split not in SPLIT_TEST_FOLDS:
            raise ConfigError(f"data.split must be one of {list(SPLIT_TEST_FOLDS)}, got {self.data.split!r}")
        if self.train.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"train.optimizer must be 'sgd' or 'adamw', got {self.train.optimizer!r}")
        if self.train.amp not in ("auto", "on", "off"):
            raise ConfigError(f"train.amp must be auto, on or off, got {self.train.amp!r}")

    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}-{self.data.split}")


def load_experiment(path: str | Path) -> ExperimentConfig:
    return load_yaml(ExperimentConfig, path)
