"""One YAML per experiment (``configs/*.yaml``), validated into these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aird.config import from_dict, load_yaml, require
from aird.data.degrade import RESOLUTIONS, Degradation
from aird.data.jitter import Jitter
from aird.data.pools import BUILTIN_POOLS, POOL_KINDS, PoolSpec
from aird.distill.data import SPLIT_TEST_FOLDS
from aird.distill.losses import check_term
from aird.distill.methods import method_terms
from aird.errors import ConfigError
from aird.eval.runner import PAIR_MODES
from aird.models.registry import INPUT_SIZES, MODELS
from aird.paths import default_data_root

# Every section checks its own ranges and names when it is built, so a bad value fails at load,
# before any data is aligned or any step is trained; each message names the key and its valid range.


INIT_FORM = "a student .safetensors file or 'shipped'"


def student_file(value: str | None, key: str) -> Path | None:
    """The student file a setting names (``shipped``: the package's student), None for none; a value that is
    not a ``.safetensors`` file, or a missing file, fails naming ``key``."""
    if value is None:
        return None
    if value == "shipped":
        from aird.models.shipped import default_student_path

        return default_student_path()
    require(key, value, str(value).endswith(".safetensors"), INIT_FORM)
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} not found; train it first (aird distill) or use 'shipped'")
    return path


@dataclass
class StudentConfig:
    model: str = "dlib_resnet_bn"  # registry name; initialised with the teacher's weights
    input_size: int = 150  # the LR face is up-sampled to this side before the student reads it
    # "train": BN normalises with each batch's statistics while training (and tracks LR running stats);
    # "frozen": BN keeps the restored HR statistics, so training starts from the teacher's exact function.
    bn: str = "train"
    # Progressive resizing: the side the student reads in each of the first epochs (epoch i reads
    # progressive[i]; later epochs read input_size). A teacher-initialised network can start near the side
    # its weights were trained at and shrink towards input_size, instead of meeting the small side at once.
    progressive: list[int] | None = None
    # Start from a trained student (a .safetensors file, or "shipped") instead of the model's own weights, as
    # --init does. A full dlib_resnet_bn student given to a slim model (dlib_resnet_slim50, ...) is pruned
    # into it (aird.models.prune).
    init: str | None = None

    def __post_init__(self) -> None:
        MODELS.check(self.model, "student.model")
        if self.init not in (None, "shipped"):
            # Only the form here: an init may be the run of another config, trained before this one starts
            # (run_experiment looks for the file before any data is built).
            require("student.init", self.init, str(self.init).endswith(".safetensors"), INIT_FORM)
        lo, hi = INPUT_SIZES[self.model]
        require("student.input_size", self.input_size, lo <= self.input_size <= hi, f"in {lo}..{hi} for {self.model}")
        require("student.bn", self.bn, self.bn in ("train", "frozen"), "'train' or 'frozen'")
        for i, side in enumerate(self.progressive or []):
            require(
                f"student.progressive[{i}]",
                side,
                isinstance(side, int) and lo <= side <= hi,
                f"in {lo}..{hi} for {self.model}",
            )

    def init_path(self) -> Path | None:
        """The file ``init`` names (``shipped``: the package's student), or None."""
        return student_file(self.init, "student.init")

    def side_at(self, epoch: int) -> int:
        """The side the student reads in ``epoch`` (0-based)."""
        sides = self.progressive or []
        return sides[epoch] if epoch < len(sides) else self.input_size


@dataclass
class DataConfig:
    data_root: str | None = None  # default: $AIRD_DATA or ../shared/data
    split: str = "A"  # A: test folds 1-5, train on everyone else; B: test folds 6-10; all: folds 1-10
    # Built-in names (lfw, celeba, utkface) and the user's own pools, e.g. {kind: identities, path: /x/casia,
    # aligned: false} (aird.data.pools, docs/data.md). Each mapping is checked at load and kept with its
    # path made absolute and its name filled in, so config.json says exactly what was read.
    pools: list[PoolSpec | str] = field(default_factory=lambda: ["lfw"])
    leak_threshold: float = 0.95  # extra images this close (cosine) to a test person are dropped; 1: none
    flip: bool = True  # mirror HR/LR pairs, with the teacher's target of the mirrored chip
    # A seeded share of the training faces (after the leak filter), for data-scaling studies; 1: every face
    subsample: float = 1.0

    def __post_init__(self) -> None:
        require("data.split", self.split, self.split in SPLIT_TEST_FOLDS, f"one of {list(SPLIT_TEST_FOLDS)}")
        require("data.pools", self.pools, bool(self.pools), "a non-empty list of pools")
        root = Path(self.data_root).expanduser() if self.data_root else default_data_root()
        pools: list[PoolSpec | str] = []
        names: dict[str, int] = {}
        paths: dict[str, int] = {}
        for i, pool in enumerate(self.pools):
            where = f"data.pools[{i}]"
            if isinstance(pool, dict):  # built in Python rather than loaded from YAML
                pool = from_dict(PoolSpec, pool, where)
            if isinstance(pool, str):
                require(
                    where,
                    pool,
                    pool in BUILTIN_POOLS,
                    f"a built-in pool {list(BUILTIN_POOLS)} or a mapping of your own "
                    f"{{kind: {'|'.join(POOL_KINDS)}, path: <folder>, aligned: true|false}}",
                )
                name = pool
            else:
                pool = pool.checked(where, root)
                name = pool.name
                if pool.path in paths:
                    raise ConfigError(
                        f"{where}.path {pool.path} is also data.pools[{paths[pool.path]}]'s: list each pool once"
                    )
                paths[pool.path] = i
            if name in names:
                hint = "" if isinstance(pool, str) else "; set name: to tell them apart"
                raise ConfigError(
                    f"data.pools must be a list without repeats: data.pools[{names[name]}] and {where} are both "
                    f"{name!r}{hint}"
                )
            names[name] = i
            pools.append(pool)
        self.pools = pools
        require("data.leak_threshold", self.leak_threshold, 0 < self.leak_threshold <= 1, "in (0, 1]")
        require("data.subsample", self.subsample, 0 < self.subsample <= 1, "in (0, 1]")


@dataclass
class JitterConfig:
    """Box jitter of the HR chip before LR synthesis (``aird.data.jitter.Jitter``), drawn per sample."""

    shift: float = 0.0  # the crop's centre moves up to this fraction of its side, along x and along y
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # [low, high] factor on the crop's side
    rotate: float = 0.0  # degrees, either way

    def __post_init__(self) -> None:
        try:
            self.build()
        except ConfigError as exc:
            raise ConfigError(f"degradation.{exc}") from None

    def build(self) -> Jitter:
        return Jitter(self.shift, tuple(self.scale), self.rotate)


@dataclass
class DegradationConfig:
    """Training LR synthesis: lists are drawn from per sample, [low, high] ranges likewise."""

    res: list[int] = field(default_factory=lambda: [16])
    down: list[str] = field(default_factory=lambda: ["area"])
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 0.0])
    noise_std: list[float] = field(default_factory=lambda: [0.0, 0.0])
    jpeg_quality: list[int] | None = None
    jitter: JitterConfig | None = None  # off unless given: a detector's misframing of the face
    grayscale: float = 0.0  # share of samples made monochrome (a camera at night, in infrared)

    def build(self, out_size: int, seed: int) -> Degradation:
        return Degradation(
            res=tuple(self.res),
            down=tuple(self.down),
            up="bicubic",
            out_size=out_size,
            blur_sigma=tuple(self.blur_sigma),
            noise_std=tuple(self.noise_std),
            jpeg_quality=tuple(self.jpeg_quality) if self.jpeg_quality else None,
            jitter=self.jitter.build() if self.jitter else None,
            grayscale=self.grayscale or False,  # 0 stays the no-op False, so cache keys do not move
            seed=seed,
        )


@dataclass
class MixupConfig:
    """Blended inputs for bridge distillation: a share ``prob`` of each batch's HR chips is replaced by
    lam * chip + (1 - lam) * another chip of the batch, lam ~ Beta(alpha, alpha), before LR synthesis.

    A blend has no identity and no cached HR-teacher embedding, but the bridge embeds it like any face, so
    the student learns the bridge's function on inputs beyond the training faces ("function matching",
    Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and consistent")."""

    prob: float = 0.5
    alpha: float = 1.0

    def __post_init__(self) -> None:
        require("bridge.mixup.prob", self.prob, 0.0 <= self.prob <= 1.0, "in [0, 1]")
        require("bridge.mixup.alpha", self.alpha, self.alpha > 0, "> 0")


@dataclass
class BridgeConfig:
    """Bridge distillation: a trained student teaches, on the same LR face, in place of the HR teacher.

    ``student`` is a student file (or ``shipped``, the package's student). Each LR face is embedded by it
    (up-sampled to its own input side) and that embedding is f_t for every loss term; the HR teacher still
    gives the head C_t and the feature mean. Used to train a small native-LR network from the main student.
    """

    student: str | None = None
    # Both targets at once: f_t points along (1 - w) * the bridge's unit embedding + w * the HR teacher's
    # (with the bridge's length); 0 is plain bridge distillation.
    teacher_weight: float = 0.0
    mixup: MixupConfig | None = None  # off unless given

    def __post_init__(self) -> None:
        require("bridge.teacher_weight", self.teacher_weight, 0.0 <= self.teacher_weight <= 1.0, "in [0, 1]")
        if self.mixup is not None and self.student is None:
            raise ConfigError("bridge.mixup blends faces that only a bridge can embed: set bridge.student")
        if self.mixup is not None and self.teacher_weight > 0:
            raise ConfigError(
                "bridge.mixup with bridge.teacher_weight > 0: the HR teacher's cached embeddings are of unblended "
                "faces; drop one of the two"
            )
        if self.teacher_weight > 0 and self.student is None:
            raise ConfigError("bridge.teacher_weight mixes the HR teacher into a bridge's targets: set bridge.student")
        self.path()  # a bad or missing file fails at load, not after the training set is built

    def path(self) -> Path | None:
        return student_file(self.student, "bridge.student")


@dataclass
class HeadConfig:
    scale: float = 30.0
    margin: float = 0.2
    steps: int = 100  # 0: the class means alone

    def __post_init__(self) -> None:
        require("head.scale", self.scale, self.scale > 0, "> 0")
        require("head.margin", self.margin, self.margin >= 0, ">= 0")
        require("head.steps", self.steps, self.steps >= 0, ">= 0")


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
    clip_grad: float | None = 5.0  # max gradient norm; null: no clipping (the norm is still logged)
    queue_size: int = 1024  # recent teacher features kept for the relation loss
    seed: int = 0
    amp: str = "auto"  # auto (CUDA only) | on (CPU: bfloat16) | off
    threads: int | None = None  # torch CPU threads per process
    checkpoint_every: int = 100  # steps
    log_every: int = 10
    max_steps: int | None = None  # cap on total steps (smoke tests); the schedule still spans all epochs

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            require(f"train.{key}", getattr(self, key), getattr(self, key) >= 1, ">= 1")
        for key in ("threads", "max_steps"):
            value = getattr(self, key)
            require(f"train.{key}", value, value is None or value >= 1, ">= 1 or null")
        require("train.optimizer", self.optimizer, self.optimizer in ("sgd", "adamw"), "'sgd' or 'adamw'")
        require("train.lr", self.lr, self.lr > 0, "> 0")
        require("train.head_lr", self.head_lr, self.head_lr is None or self.head_lr > 0, "> 0 or null (= lr)")
        require("train.momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)")
        for key in ("weight_decay", "warmup_steps", "queue_size", "seed"):
            require(f"train.{key}", getattr(self, key), getattr(self, key) >= 0, ">= 0")
        require("train.clip_grad", self.clip_grad, self.clip_grad is None or self.clip_grad > 0, "> 0 or null")
        require("train.amp", self.amp, self.amp in ("auto", "on", "off"), "auto, on or off")


@dataclass
class EvalSettings:
    res: list[int] = field(default_factory=lambda: [16, 12, 8])
    pairs: list[str] = field(default_factory=lambda: ["lr-lr", "hr-lr"])
    flip_fuse: bool = False  # average the embeddings of the face and its mirror

    def __post_init__(self) -> None:
        bad = [r for r in self.res if r not in RESOLUTIONS]
        require("eval.res", self.res, self.res and not bad, f"a list of resolutions from {list(RESOLUTIONS)}")
        bad = [p for p in self.pairs if p not in PAIR_MODES]
        require("eval.pairs", self.pairs, self.pairs and not bad, f"a list of pair modes from {list(PAIR_MODES)}")


@dataclass
class ExperimentConfig:
    name: str  # required: the run directory is runs/<name>-<split>, and a default would mix two experiments
    method: str = "aird"
    losses: dict = field(default_factory=dict)  # per-term overrides, e.g. {rld: {weight: 2.0, tau: 0.1}}
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    out_dir: str | None = None  # default: runs/<name>-<split>

    def __post_init__(self) -> None:
        ok = self.name.strip() and "/" not in self.name and "\\" not in self.name and not self.name.startswith(".")
        require("name", self.name, ok, "a plain name (no path separators, not starting with '.')")
        # an unknown method, term, term option or option value fails here, at load
        for term, spec in method_terms(self.method, self.losses).items():
            check_term(term, spec, f"losses.{term}")
        try:
            self.degradation.build(self.student.input_size, self.train.seed)
        except ConfigError as exc:
            raise ConfigError(f"degradation: {exc}") from None

    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}-{self.data.split}")


def load_experiment(path: str | Path) -> ExperimentConfig:
    return load_yaml(ExperimentConfig, path)
