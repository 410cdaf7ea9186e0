"""Reader of dlib's binary ``serialize`` format, as far as dlib's DNN model files need it.

Pure Python + numpy: no dlib import. The encoding (from dlib/serialize.h, float_details.h,
cuda/tensor.h, dnn/core.h, dnn/layers.h, dnn/input.h, dnn/loss.h):

* integers are packed: one control byte (low 4 bits = number of following little-endian magnitude
  bytes, 0x80 = negative, 0x70 reserved and always 0), then the bytes;
* floats and doubles are ``float_details``: a packed int64 mantissa and a packed int16 exponent,
  value = mantissa * 2**exponent; exponents 32000/32001/32002 mean +inf/-inf/NaN;
* ``bool`` is the ASCII byte '0' or '1'; ``std::string`` is a packed size then the raw bytes;
* a tensor is a packed version then its dimensions: version 2 writes num_samples, k, nr, nc and
  then raw little-endian float32 values; version 1 wrote num_samples, nr, nc, k and then one
  ``float_details`` per value (data order is n, k, nr, nc in both);
* a network is written recursively, each wrapper writing its version and then its sub-network:
  add_loss_layer (1, loss details, sub-network), add_layer (version, sub-network, layer details,
  3 bools, 2 or 3 state tensors), add_tag_layer / add_skip_layer (1, sub-network), and the
  add_layer that sits on the input layer (2 or 3, input layer, details, 3 bools, 3 tensors and,
  from version 3, an unsigned sample-expansion factor).

So a file holds the wrapper versions from the loss down to the input, the input layer, and then
each layer's details from the input up. Tag and skip wrappers store nothing but their version,
and ``add_prev_`` does not store its tag: which tag a skip or add_prev refers to lives in the C++
type, not in the file. Reading therefore takes the expected layout (a list of ``LayerSpec``) and
checks the file against it record by record.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aird.errors import ModelFileError
from aird.io import atomic_path
from aird.paths import cache_dir

COMPUTATIONAL_KINDS = ("con", "affine", "relu", "add_prev", "avg_pool", "max_pool", "fc")
STRUCTURAL_KINDS = ("tag", "skip")

# float_details marks special values in the exponent.
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002
# Longest version string of any dlib layer is ~25 characters; a much longer "string" is not one.
_MAX_VERSION_LEN = 64
CACHE_FORMAT = "aird-dlib-net/1"


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the expected network, input side first: ``kind`` and, for tag/skip/add_prev, the tag id."""

    kind: str
    tag: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in COMPUTATIONAL_KINDS + STRUCTURAL_KINDS:
            raise ValueError(f"unknown dlib layer kind {self.kind!r}")
        if (self.kind in ("tag", "skip", "add_prev")) != (self.tag is not None):
            raise ValueError(f"layer kind {self.kind!r}: a tag id is required exactly for tag, skip and add_prev")


@dataclass
class LayerRecord:
    """One layer as stored: dlib's version string, scalar settings and parameter arrays."""

    kind: str
    version: str  # e.g. "con_4"; empty for tag and skip, which store none
    tag: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class InputRecord:
    version: str  # "input_rgb_image_sized" or "input_rgb_image"
    mean_rgb: tuple[float, float, float]  # subtracted from 0..255 pixels before dividing by 256
    size: tuple[int, int] | None  # (nr, nc) for the sized input layer


@dataclass
class LossRecord:
    version: str
    margin: float
    dist_thresh: float


@dataclass
class DlibNet:
    """A parsed dlib network: layers input side first, without the input and loss layers."""

    source: Path
    sha256: str
    input: InputRecord
    loss: LossRecord
    layers: list[LayerRecord]

    def num_params(self) -> int:
        return sum(int(a.size) for rec in self.layers for a in rec.params.values())


class DlibStream:
    """A cursor over the bytes of a dlib-serialized object; every read checks bounds and format."""

    def __init__(self, data: bytes, source: str | Path = "<bytes>"):
        self.data = data
        self.source = str(source)
        self.pos = 0

    def error(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.source}: {message} (at byte {self.pos} of {len(self.data)})")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise self.error(
                f"file ends inside {what}: {n} bytes needed, {self.remaining()} left; the file is truncated"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str, max_bytes: int = 8, signed: bool = True) -> int:
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        # dlib's writer never sets the reserved bits nor writes 0 bytes; either means this is not dlib data.
        if ctrl & 0x70 or size == 0 or size > max_bytes or (ctrl & 0x80 and not signed):
            self.pos -= 1
            raise self.error(f"invalid packed integer (control byte 0x{ctrl:02x}) where {what} was expected")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if ctrl & 0x80 else value

    def uint(self, what: str, max_bytes: int = 8) -> int:
        return self.int(what, max_bytes, signed=False)

    def float(self, what: str) -> float:
        if self.remaining() and self.data[self.pos] & 0x70:
            raise self.error(f"{what}: dlib's old ASCII float encoding (pre-2013 files) is not supported")
        mantissa = self.int(f"{what} (mantissa)", 8)
        exponent = self.int(f"{what} (exponent)", 2)
        if exponent < _EXP_INF:
            return math.ldexp(mantissa, exponent)
        if exponent == _EXP_INF:
            return math.inf
        if exponent == _EXP_NINF:
            return -math.inf
        return math.nan

    def bool(self, what: str) -> bool:
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.error(f"{what}: expected a bool ('0' or '1'), found byte 0x{ch[0]:02x}")
        return ch == b"1"

    def string(self, what: str, max_len: int = _MAX_VERSION_LEN) -> str:
        n = self.uint(f"{what} (length)")
        if n > max_len:
            raise self.error(f"{what}: expected a short string, found a length of {n}")
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what}: expected an ASCII string, found {raw[:16]!r}") from None

    def tensor(self, what: str) -> np.ndarray:
        """A ``resizable_tensor``, returned as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.int(f"{what} (tensor version)", 4)
        if version == 2:
            n, k, nr, nc = (self.int(f"{what} ({d})") for d in ("num_samples", "k", "nr", "nc"))
        elif version == 1:
            n, nr, nc, k = (self.int(f"{what} ({d})") for d in ("num_samples", "nr", "nc", "k"))
        else:
            raise self.error(f"{what}: unknown tensor version {version} (dlib writes 1 or 2)")
        if min(n, k, nr, nc) < 0:
            raise self.error(f"{what}: negative tensor dimension {(n, k, nr, nc)}")
        count = n * k * nr * nc
        # Both encodings need at least 4 bytes a value: checking first refuses absurd sizes cheaply.
        if 4 * count > self.remaining():
            raise self.error(
                f"file ends inside {what}: a {n}x{k}x{nr}x{nc} tensor needs at least {4 * count} bytes, "
                f"{self.remaining()} left; the file is truncated"
            )
        if version == 2:
            values = np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)
        else:
            values = np.array([self.float(what) for _ in range(count)], dtype=np.float32)
        return values.reshape(n, k, nr, nc)

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        version = self.int(f"{what} (alias_tensor version)", 4)
        if version != 1:
            raise self.error(f"{what}: unknown alias_tensor version {version} (dlib writes 1)")
        return tuple(self.int(f"{what} ({d})") for d in ("num_samples", "k", "nr", "nc"))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Layer details, one reader per kind (the version string comes first in every one).


def _version(s: DlibStream, what: str, accepted: Sequence[str]) -> str:
    start = s.pos
    version = s.string(f"{what} version string")
    if version not in accepted:
        s.pos = start
        raise s.error(f"{what} record: expected version {' or '.join(accepted)}, found {version!r}")
    return version


def _split(s: DlibStream, params: np.ndarray, what: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a layer's flat parameter tensor into named arrays of the shapes its alias tensors declare."""
    flat = params.reshape(-1)
    need = sum(math.prod(shape) for shape in shapes.values())
    if flat.size != need:
        raise s.error(f"{what}: parameter tensor holds {flat.size} values, its layout declares {need}")
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = flat[start : start + size].reshape(shape).copy()
        start += size
    return out


def _read_doubles(s: DlibStream, what: str, names: Sequence[str]) -> dict[str, float]:
    return {name: s.float(f"{what} {name}") for name in names}


_MULTIPLIERS = (
    "learning_rate_multiplier",
    "weight_decay_multiplier",
    "bias_learning_rate_multiplier",
    "bias_weight_decay_multiplier",
)


def _read_con(s: DlibStream) -> LayerRecord:
    version = _version(s, "con_", ("con_4", "con_5", "con_6"))
    params = s.tensor("con_ params")
    attrs: dict[str, Any] = {"num_filters": s.int("con_ num_filters")}
    for name in ("nr", "nc"):
        attrs[name] = s.int(f"con_ {name}")
    for name in ("stride_y", "stride_x", "padding_y", "padding_x"):
        attrs[name] = s.int(f"con_ {name}", 4)
    filters = s.alias_tensor("con_ filters")
    biases = s.alias_tensor("con_ biases")
    attrs.update(_read_doubles(s, "con_", _MULTIPLIERS))
    attrs["use_bias"] = s.bool("con_ use_bias") if version in ("con_5", "con_6") else True
    attrs["use_relu"] = s.bool("con_ use_relu") if version == "con_6" else False
    shapes = {"weight": filters}
    if attrs["use_bias"]:
        shapes["bias"] = (math.prod(biases),)
    rec = LayerRecord("con", version, attrs=attrs, params=_split(s, params, "con_", shapes))
    if filters[0] != attrs["num_filters"] or filters[2:] != (attrs["nr"], attrs["nc"]):
        raise s.error(
            f"con_: filter tensor {filters} disagrees with num_filters={attrs['num_filters']}, {attrs['nr']}x{attrs['nc']}"
        )
    return rec


def _read_affine(s: DlibStream) -> LayerRecord:
    version = _version(s, "affine_", ("affine_", "affine_2"))
    params = s.tensor("affine_ params")
    gamma = s.alias_tensor("affine_ gamma")
    beta = s.alias_tensor("affine_ beta")
    mode = s.int("affine_ mode", 4)  # dlib's layer_mode: 0 = CONV_MODE (per channel), 1 = FC_MODE
    disabled = s.bool("affine_ disabled") if version == "affine_2" else False
    if mode not in (0, 1):
        raise s.error(f"affine_: unknown mode {mode} (0 = per channel, 1 = per element)")
    # Per channel: (1, k, 1, 1) -> (k,); per element: (1, k, nr, nc) -> (k, nr, nc).
    shape_g = (gamma[1],) if mode == 0 else tuple(gamma[1:])
    shape_b = (beta[1],) if mode == 0 else tuple(beta[1:])
    shapes = {} if disabled else {"gamma": shape_g, "beta": shape_b}
    return LayerRecord(
        "affine", version, attrs={"mode": mode, "disabled": disabled}, params=_split(s, params, "affine_", shapes)
    )


def _read_relu(s: DlibStream) -> LayerRecord:
    return LayerRecord("relu", _version(s, "relu_", ("relu_",)))


def _read_add_prev(s: DlibStream) -> LayerRecord:
    return LayerRecord("add_prev", _version(s, "add_prev_", ("add_prev_",)))


def _read_pool(s: DlibStream, kind: str) -> LayerRecord:
    name = f"{kind}_"
    version = _version(s, name, (f"{kind}_2",))
    attrs: dict[str, Any] = {}
    for a in ("nr", "nc"):
        attrs[a] = s.int(f"{name} {a}")
    for a in ("stride_y", "stride_x", "padding_y", "padding_x"):
        attrs[a] = s.int(f"{name} {a}", 4)
    return LayerRecord(kind, version, attrs=attrs)


def _read_fc(s: DlibStream) -> LayerRecord:
    version = _version(s, "fc_", ("fc_2", "fc_3"))
    attrs: dict[str, Any] = {"num_outputs": s.uint("fc_ num_outputs"), "num_inputs": s.uint("fc_ num_inputs")}
    params = s.tensor("fc_ params")
    weights = s.alias_tensor("fc_ weights")
    biases = s.alias_tensor("fc_ biases")
    attrs["bias_mode"] = s.int("fc_ bias_mode", 4)  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    attrs.update(_read_doubles(s, "fc_", _MULTIPLIERS))
    attrs["use_bias"] = s.bool("fc_ use_bias") if version == "fc_3" else True
    # dlib's fc weights are (num_inputs, num_outputs): output = input @ weight.
    if weights[:2] != (attrs["num_inputs"], attrs["num_outputs"]):
        raise s.error(
            f"fc_: weight tensor {weights} disagrees with {attrs['num_inputs']} inputs, {attrs['num_outputs']} outputs"
        )
    shapes = {"weight": (attrs["num_inputs"], attrs["num_outputs"])}
    if attrs["bias_mode"] == 0 and attrs["use_bias"]:
        shapes["bias"] = (math.prod(biases),)
    return LayerRecord("fc", version, attrs=attrs, params=_split(s, params, "fc_", shapes))


_DETAIL_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "add_prev": _read_add_prev,
    "avg_pool": lambda s: _read_pool(s, "avg_pool"),
    "max_pool": lambda s: _read_pool(s, "max_pool"),
    "fc": _read_fc,
}


def _read_input(s: DlibStream) -> InputRecord:
    version = _version(s, "input layer", ("input_rgb_image_sized", "input_rgb_image"))
    mean = tuple(s.float(f"{version} avg_{c}") for c in ("red", "green", "blue"))
    size = None
    if version == "input_rgb_image_sized":
        size = (s.uint(f"{version} NR"), s.uint(f"{version} NC"))
    return InputRecord(version, mean, size)  # type: ignore[arg-type]


def _read_loss(s: DlibStream) -> LossRecord:
    version = _version(s, "loss layer", ("loss_metric_", "loss_metric_2"))
    if version == "loss_metric_":
        return LossRecord(version, 0.1, 0.75)  # values dlib hard-coded before loss_metric_2
    return LossRecord(version, s.float("loss_metric_ margin"), s.float("loss_metric_ dist_thresh"))


def _expect_version(s: DlibStream, what: str, accepted: Sequence[int]) -> int:
    start = s.pos
    version = s.int(f"{what} version", 4)
    if version not in accepted:
        s.pos = start
        raise s.error(
            f"expected {what} version {' or '.join(map(str, accepted))}, found {version}: "
            "not a dlib network of the expected layout"
        )
    return version


# ---------------------------------------------------------------------------------------------


def parse_dlib_net(data: bytes, layout: Sequence[LayerSpec], source: str | Path = "<bytes>") -> DlibNet:
    """Parse a serialized ``add_loss_layer`` network whose layers (input side first) are ``layout``."""
    if not layout or layout[0].kind in STRUCTURAL_KINDS:
        raise ValueError("layout must start (input side) with a computational layer")
    s = DlibStream(data, source)
    _expect_version(s, "add_loss_layer", (1,))
    loss = _read_loss(s)

    # Wrapper versions, from the layer under the loss down to the one on the input.
    wrapper_version: dict[int, int] = {}
    for i in range(len(layout) - 1, -1, -1):
        spec = layout[i]
        what = f"layer {i} ({spec.kind}{spec.tag or ''})"
        if spec.kind in STRUCTURAL_KINDS:
            _expect_version(s, f"{what}: add_{spec.kind}_layer", (1,))
        elif i == 0:
            wrapper_version[i] = _expect_version(s, f"{what}: add_layer on the input", (2, 3))
        else:
            wrapper_version[i] = _expect_version(s, f"{what}: add_layer", (1, 2))
    try:
        input_rec = _read_input(s)
    except ModelFileError as err:
        raise ModelFileError(
            f"{err} -- the file holds more layers than the expected layout, or is not this network"
        ) from None

    # Details and per-layer state, from the input up.
    layers: list[LayerRecord] = []
    for i, spec in enumerate(layout):
        if spec.kind in STRUCTURAL_KINDS:
            layers.append(LayerRecord(spec.kind, "", tag=spec.tag))
            continue
        try:
            rec = _DETAIL_READERS[spec.kind](s)
        except ModelFileError as err:
            raise ModelFileError(f"{err} [layer {i} of {len(layout)}, expected {spec.kind}]") from None
        rec.tag = spec.tag
        what = f"layer {i} ({rec.version}) state"
        for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            s.bool(f"{what} {flag}")
        s.tensor(f"{what} x_grad")
        s.tensor(f"{what} cached_output")
        if i == 0:
            s.tensor(f"{what} grad_final")
            if wrapper_version[i] >= 3:
                s.uint(f"{what} sample_expansion_factor", 4)
        elif wrapper_version[i] == 2:
            s.tensor(f"{what} params_grad")
        layers.append(rec)
    if s.remaining():
        raise s.error(f"{s.remaining()} unexpected bytes after the network: not the expected layout, or a corrupt file")
    for i, rec in enumerate(layers):
        for name, arr in rec.params.items():
            if not np.isfinite(arr).all():
                raise ModelFileError(
                    f"{source}: layer {i} ({rec.version}) {name} holds non-finite values: corrupt file"
                )
    return DlibNet(Path(source), hashlib.sha256(data).hexdigest(), input_rec, loss, layers)


def read_dlib_net(path: str | Path, layout: Sequence[LayerSpec]) -> DlibNet:
    """Parse a dlib model file (no cache)."""
    return parse_dlib_net(_read_bytes(path), layout, path)


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read the dlib model file: {err.strerror or err}") from None


# ---------------------------------------------------------------------------------------------
# Cache of decoded weights: <cache>/models/dlib/<sha256 of the .dat>.safetensors


def _layout_key(layout: Sequence[LayerSpec]) -> str:
    return json.dumps([[spec.kind, spec.tag] for spec in layout])


def _cache_path(sha256: str) -> Path:
    return cache_dir("models") / "dlib" / f"{sha256}.safetensors"


def _write_cache(path: Path, net: DlibNet, layout: Sequence[LayerSpec]) -> None:
    from safetensors.numpy import save_file

    tensors = {
        f"{i}.{name}": np.ascontiguousarray(arr) for i, rec in enumerate(net.layers) for name, arr in rec.params.items()
    }
    meta = {
        "format": CACHE_FORMAT,
        "sha256": net.sha256,
        "layout": _layout_key(layout),
        "input": json.dumps([net.input.version, list(net.input.mean_rgb), net.input.size]),
        "loss": json.dumps([net.loss.version, net.loss.margin, net.loss.dist_thresh]),
        "layers": json.dumps([[rec.kind, rec.version, rec.tag, rec.attrs] for rec in net.layers]),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _read_cache(path: Path, source: Path, sha256: str, layout: Sequence[LayerSpec]) -> DlibNet | None:
    """The cached network, or None when absent, stale or unreadable (then it is rebuilt, never trusted)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if (meta.get("format"), meta.get("sha256"), meta.get("layout")) != (
                CACHE_FORMAT,
                sha256,
                _layout_key(layout),
            ):
                return None
            arrays = {key: f.get_tensor(key) for key in f.keys()}
        in_version, mean, size = json.loads(meta["input"])
        loss = LossRecord(*json.loads(meta["loss"]))
        layers = []
        for i, (kind, version, tag, attrs) in enumerate(json.loads(meta["layers"])):
            prefix = f"{i}."
            params = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            layers.append(LayerRecord(kind, version, tag, attrs, params))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError):
        return None
    return DlibNet(source, sha256, InputRecord(in_version, tuple(mean), tuple(size) if size else None), loss, layers)


def load_dlib_net(path: str | Path, layout: Sequence[LayerSpec], cache: bool = True) -> DlibNet:
    """Parse a dlib model file, reusing decoded weights cached under the file's sha256."""
    path = Path(path)
    data = _read_bytes(path)
    sha256 = hashlib.sha256(data).hexdigest()
    if cache:
        cached = _read_cache(_cache_path(sha256), path, sha256, layout)
        if cached is not None:
            return cached
    net = parse_dlib_net(data, layout, path)
    if cache:
        _write_cache(_cache_path(sha256), net, layout)
    return net
