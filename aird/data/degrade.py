"""Low-resolution synthesis: the one degradation used by training and evaluation alike.

HR chip --(optional box jitter, Gaussian blur)--> down-sample to R x R --(optional grayscale, gamma, noise,
JPEG)--> LR face --(optional up-sampling)--> network input. Every random choice is drawn from a generator seeded
by (seed, sample key), so a face degrades the same way in every run, process and batch order.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import cv2
import numpy as np

from aird.data.jitter import Jitter, jitter_chip
from aird.errors import ConfigError

RESOLUTIONS = (8, 12, 16, 20, 24, 32)
INTERPOLATIONS = {"area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def _as_tuple(value, name: str) -> tuple:
    out = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not out:
        raise ConfigError(f"{name} must not be empty")
    return out


def _range(value, name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    # Written so that NaN fails too (every comparison with NaN is false).
    if not (0 <= lo <= hi < math.inf):
        raise ConfigError(
            f"{name} must be a finite value >= 0 or a range [low, high] with 0 <= low <= high, got {value!r}"
        )
    return float(lo), float(hi)


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from any printable parts, equal on every machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Degradation:
    """How an HR chip becomes an LR face.

    ``res`` and ``down`` take one value (fixed) or several (one drawn per sample); ``blur_sigma``
    (HR pixels), ``noise_std`` (grey levels at LR) and ``jpeg_quality`` take a value or a [low, high]
    range drawn per sample. ``jitter`` first re-frames the HR chip as a detector's box would differ from
    the 5-point alignment (:class:`aird.data.jitter.Jitter`, or a mapping of its fields, so that
    ``Degradation(**d.settings())`` rebuilds ``d``). ``up`` re-samples the R x R face to ``out_size``
    (default: the HR chip's size) so a network built for HR input can read it; ``up=None`` keeps the native R x R face.
    """

    res: int | tuple[int, ...] = 16
    down: str | tuple[str, ...] = "area"
    up: str | None = "bicubic"
    out_size: int | None = None
    blur_sigma: float | tuple[float, float] = 0.0
    noise_std: float | tuple[float, float] = 0.0
    jpeg_quality: int | tuple[int, int] | None = None
    grayscale: bool | float = False  # capture shift: a monochrome camera; a number in [0, 1]: that share of samples
    gamma: float = 1.0  # capture shift: > 1 darkens mid-tones (low light), I' = 255 (I / 255) ** gamma
    jitter: Jitter | None = None
    seed: int = 0
    _resolutions: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _downs: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        res = tuple(int(r) for r in _as_tuple(self.res, "res"))
        bad = [r for r in res if r not in RESOLUTIONS]
        if bad:
            raise ConfigError(
                f"unknown resolution {bad[0]}; choose from {list(RESOLUTIONS)} (or evaluate HR without --res)"
            )
        downs = _as_tuple(self.down, "down")
        for name in downs + ((self.up,) if self.up else ()):
            if name not in INTERPOLATIONS:
                raise ConfigError(f"unknown interpolation {name!r}; choose from {sorted(INTERPOLATIONS)}")
        _range(self.blur_sigma, "blur_sigma")
        _range(self.noise_std, "noise_std")
        if self.jpeg_quality is not None:
            lo, hi = _range(self.jpeg_quality, "jpeg_quality")
            if not 1 <= lo <= hi <= 100:
                raise ConfigError(f"jpeg_quality must lie in 1..100, got {self.jpeg_quality!r}")
        if not isinstance(self.grayscale, (bool, int, float)) or not 0 <= float(self.grayscale) <= 1:
            raise ConfigError(f"grayscale must be true, false or a share of samples in [0, 1], got {self.grayscale!r}")
        if not 0 < self.gamma < math.inf:
            raise ConfigError(f"gamma must be a positive finite number, got {self.gamma}")
        if self.out_size is not None and self.out_size < 1:
            raise ConfigError(f"out_size must be positive, got {self.out_size}")
        jitter = Jitter(**self.jitter) if isinstance(self.jitter, dict) else self.jitter
        if jitter is not None and not isinstance(jitter, Jitter):
            raise ConfigError(f"jitter must be a Jitter, a mapping of its fields or None, got {jitter!r}")
        # A jitter that moves nothing is no jitter: same faces, so the same cache key.
        object.__setattr__(self, "jitter", None if jitter is None or jitter.is_identity else jitter)
        object.__setattr__(self, "_resolutions", res)
        object.__setattr__(self, "_downs", downs)

    def settings(self) -> dict:
        """Plain settings for result records and cache keys."""
        d = asdict(self)
        d["jitter"] = self.jitter.settings() if self.jitter is not None else None
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if not k.startswith("_")}

    def key(self) -> str:
        # Capture shifts at their no-op values stay out of the key, so caches made before they
        # existed remain valid.
        noop = {"grayscale": False, "gamma": 1.0, "jitter": None}
        items = {k: v for k, v in self.settings().items() if not (k in noop and v == noop[k])}
        return hashlib.sha1(repr(sorted(items.items())).encode()).hexdigest()[:12]

    def __call__(self, chip: np.ndarray, key: object) -> np.ndarray:
        """Degrade one (H, W, 3) uint8 chip; ``key`` names the sample (and epoch, if it should vary)."""
        # The jitter draws from a generator of its own, so switching it on leaves every other draw of
        # the sample (resolution, interpolation, blur, noise, JPEG) as it was.
        jitter_rng = None if self.jitter is None else np.random.default_rng(stable_seed(self.seed, "jitter", key))
        share = float(self.grayscale)
        # A share of grey samples is drawn apart too, for the same reason; 0 and 1 need no draw.
        grey = share >= 1 or (share > 0 and np.random.default_rng(stable_seed(self.seed, "grey", key)).random() < share)
        return self._degrade(chip, np.random.default_rng(stable_seed(self.seed, key)), jitter_rng, grey)

    def batch(self, chips: np.ndarray, keys: Sequence[object]) -> np.ndarray:
        if len(chips) != len(keys):
            raise ValueError(f"{len(chips)} chips but {len(keys)} keys")
        return np.stack([self(c, k) for c, k in zip(chips, keys)]) if len(chips) else chips.copy()

    def _degrade(
        self,
        chip: np.ndarray,
        rng: np.random.Generator,
        jitter_rng: np.random.Generator | None = None,
        grey: bool = False,
    ) -> np.ndarray:
        if chip.dtype != np.uint8 or chip.ndim != 3:
            raise ValueError(f"expected an (H, W, C) uint8 chip, got {chip.dtype} {chip.shape}")
        res = int(rng.choice(self._resolutions))
        down = self._downs[int(rng.integers(len(self._downs)))]
        image = chip
        if jitter_rng is not None:
            image = jitter_chip(image, self.jitter, jitter_rng)
        sigma = rng.uniform(*_range(self.blur_sigma, "blur_sigma"))
        if sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
        lr = cv2.resize(image, (res, res), interpolation=INTERPOLATIONS[down])
        if grey:
            lr = np.repeat(cv2.cvtColor(lr, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        if self.gamma != 1.0:
            lr = (255.0 * (lr / 255.0) ** self.gamma).round().astype(np.uint8)
        std = rng.uniform(*_range(self.noise_std, "noise_std"))
        if std > 0:
            lr = np.clip(lr + rng.normal(0.0, std, lr.shape), 0, 255).round().astype(np.uint8)
        if self.jpeg_quality is not None:
            q = int(round(rng.uniform(*_range(self.jpeg_quality, "jpeg_quality"))))
            ok, buf = cv2.imencode(".jpg", lr, [cv2.IMWRITE_JPEG_QUALITY, q])
            lr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(lr.shape)
        if self.up is None:
            return lr
        size = self.out_size or chip.shape[0]
        return to_network_input(lr, size, self.up)


def to_network_input(face: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """The one resampling from a face of any size to a network's ``size`` x ``size`` input.

    A face made small by :class:`Degradation` and a face that arrived small (a detector's 8-40 px
    crop) both reach a model through here, with the OpenCV interpolation the students were trained
    on, so the same LR pixels give the same tensor whichever way they came. A face already at
    ``size`` x ``size`` is returned as it is.

    ``interpolation`` enlarges; a face larger than ``size`` is always shrunk by area averaging, since
    OpenCV's bicubic and bilinear shrink without a low-pass filter and alias: a 150 px HR chip
    shrunk bicubically for the 16 px fast student cost it 4.2 points of ORL rank-1 (docs/method.md).
    """
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 face, got {face.dtype} {face.shape}")
    if face.shape[:2] == (size, size):
        return face
    shrink = face.shape[0] > size or face.shape[1] > size
    how = cv2.INTER_AREA if shrink else INTERPOLATIONS[interpolation]
    return cv2.resize(np.ascontiguousarray(face), (size, size), interpolation=how)


def upsample(lr: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Re-sample an LR face to ``size`` x ``size`` (a function of the LR pixels alone)."""
    return to_network_input(lr, size, interpolation)
