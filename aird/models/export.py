"""ONNX export of face models, a check of the exported graph against PyTorch, and an embedder that runs
exported graphs on onnxruntime (the service's other backend)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aird.errors import ModelFileError
from aird.io import atomic_path
from aird.models.embedder import faces_to_tensor, module_fingerprint, resize_faces

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
# The graph's input: channels last, as images are stored (the default), or channels first, as PyTorch traces
# it. On a CPU onnxruntime runs an int8 graph channels last, so an NHWC input spares it the transposes: the
# fast student's int8 graph went from 5,310 to 12,677 faces/s (docs/method.md). Both compute the same.
INPUT_LAYOUTS = ("nchw", "nhwc")
ONNX_HELP = "install the ONNX extras: pip install 'aird[onnx]'"


def export_onnx(model: nn.Module, path: str | Path, input_size: int = 150, opset: int = 17) -> Path:
    """Write ``model`` (eval mode) as ONNX: input ``image`` (batch, 3, input_size, input_size) float pixels 0..255.

    The batch axis is dynamic; the spatial size is fixed at ``input_size`` (the graph is traced there).
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    # Batch 2, not 1, so that no size-1 broadcast of the batch axis gets baked into the trace.
    dummy = torch.zeros(2, 3, input_size, input_size)
    try:
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            # The TorchScript exporter is deliberate (the torch.export one needs onnxscript, not a dependency):
            # silence its deprecation notices, and the tracer's notes on the spatial sizes, constant here.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path


def run_onnx(path: str | Path, images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Embeddings of (N, 3, H, W) pixels 0..255 by the exported graph, on onnxruntime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images.float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def onnx_max_abs_diff(model: nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest absolute difference between the ONNX graph (onnxruntime) and ``model`` in eval mode on ``images``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(images.float()).numpy()
    finally:
        model.train(was_training)
    return float(np.abs(run_onnx(path, images) - expected).max())


def graph_layout(metadata: dict[str, str]) -> str:
    """An exported graph's input layout; graphs exported before the choice existed are channels first."""
    return metadata.get("input_layout", "nchw")


def graph_input(faces: np.ndarray, size: int, layout: str = "nchw") -> np.ndarray:
    """(N, H, W, 3) uint8 faces -> an exported graph's float32 input in ``layout`` (the embedders' resampling)."""
    if layout == "nchw":
        return faces_to_tensor(faces, size).numpy()
    if layout != "nhwc":
        raise ModelFileError(f"input layout {layout!r} is not one of {', '.join(INPUT_LAYOUTS)}")
    return resize_faces(faces, size).astype(np.float32)


def _channels_last_input(graph) -> None:
    """Make ``graph`` read (batch, H, W, 3): its channels-first input becomes a Transpose of a new NHWC one."""
    import onnx

    inner = INPUT_NAME + "_nchw"
    for node in graph.node:
        node.input[:] = [inner if name == INPUT_NAME else name for name in node.input]
    graph.node.insert(0, onnx.helper.make_node("Transpose", [INPUT_NAME], [inner], perm=[0, 3, 1, 2]))
    dims = graph.input[0].type.tensor_type.shape.dim
    batch, channels, height, width = (onnx.TensorShapeProto.Dimension() for _ in range(4))
    for new, old in zip((batch, channels, height, width), dims):
        new.CopyFrom(old)
    for d, new in zip(dims, (batch, height, width, channels)):
        d.CopyFrom(new)


def export_model(model: str | Path, out: str | Path, opset: int = 17, layout: str = "nhwc") -> Path:
    """Export a student file (or a registered model by name, e.g. the teacher ``dlib_resnet``) to ONNX.

    The graph's ``metadata_props`` keep what a runtime needs without aird's files: ``model`` (the
    architecture), ``input_size``, ``input`` and ``input_layout`` (what the pixels are, channels first or
    last: ``layout``), ``source`` and ``source_fingerprint`` (the weights it came from) and, for a student
    file with one, ``card`` (the model card, JSON).
    """
    from aird.models.registry import get_model, list_models
    from aird.models.shipped import read_card
    from aird.models.student import file_fingerprint, load_student

    text = str(model)
    if text.endswith(".safetensors"):
        module, meta = load_student(text)
        arch, size = meta["model"], int(meta["input_size"])
        props = {"source": Path(text).name, "source_fingerprint": file_fingerprint(text)}
        card = read_card(text)
        if card:
            props["card"] = json.dumps(card, sort_keys=True)
    elif text in list_models():
        module, arch = get_model(text).eval(), text
        size = int(getattr(module, "input_size", 150))
        props = {"source": text, "source_fingerprint": module_fingerprint(module)}
    else:
        raise ModelFileError(
            f"{text}: not a student .safetensors file nor a registered model ({', '.join(list_models())})"
        )
    out = Path(out)
    if out.suffix != ".onnx":
        raise ModelFileError(f"{out}: the exported file must end in .onnx")
    if layout not in INPUT_LAYOUTS:
        raise ModelFileError(f"{out}: input layout {layout!r} is not one of {', '.join(INPUT_LAYOUTS)}")
    shape = f"(batch, 3, {size}, {size})" if layout == "nchw" else f"(batch, {size}, {size}, 3)"
    props = {
        "model": arch,
        "input_size": str(size),
        "input": f"{shape} float32 RGB pixels 0..255 (uint8 faces resized bicubic)",
        "input_layout": layout,
        **props,
    }
    return export_module(module, out, size, opset, layout, props)


def export_module(
    module: nn.Module,
    out: str | Path,
    size: int,
    opset: int = 17,
    layout: str = "nhwc",
    props: dict[str, str] | None = None,
) -> Path:
    """``module`` written as ``aird export`` writes graphs: dlib's input normalization folded into the stem
    (where the model offers ``with_input_folded``), the input in ``layout``, ``props`` in the metadata."""
    try:
        import onnx
    except ImportError:
        raise ModelFileError(f"exporting to ONNX needs the onnx package; {ONNX_HELP}") from None

    if hasattr(module, "with_input_folded"):
        module = module.with_input_folded()
    with atomic_path(out) as tmp:
        export_onnx(module, tmp, size, opset)
        graph = onnx.load(str(tmp))
        if layout == "nhwc":
            _channels_last_input(graph.graph)
        if props:
            onnx.helper.set_model_props(graph, props)
        onnx.save(graph, str(tmp))
    return Path(out)


# Ops whose int8 copy changes what the graph computes; a unit without any is never worth keeping float.
_QUANTIZED_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add", "Mul"})


def int8_unit(node_name: str) -> str:
    """The unit a graph node belongs to when int8 keeps layers float: the module two levels down its
    exported name (``/features/features.6/body/body.1/Conv`` -> ``/features/features.6``, a residual
    block with its shortcut and sum), or the node itself when the name has no module path."""
    parts = node_name.split("/")
    return "/".join(parts[:3]) if node_name.startswith("/") and len(parts) > 3 else node_name


def _mean_cosine(want: np.ndarray, got: np.ndarray) -> float:
    norms = np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1) + 1e-12
    return float(np.mean((want * got).sum(1) / norms))


def quantize_int8(
    graph: str | Path,
    out: str | Path,
    calibration: np.ndarray,
    batch_size: int = 64,
    min_cosine: float = 0.9,
    held_out: np.ndarray | None = None,
    target_cosine: float | None = None,
) -> Path:
    """An int8 copy of an exported graph (onnxruntime static quantization, QDQ format): weights int8 per
    output channel, activations uint8 with ranges calibrated on ``calibration`` faces, (N, H, W, 3) uint8
    as the embedder receives them. Calibrate on training faces, never on the faces it is evaluated on.
    The embedding layer (the last Gemm/MatMul) stays float: quantized, it collapsed every face onto one
    embedding (mean cosine 0.07 to the float graph for the fast student).

    With ``target_cosine``, per-layer sensitivity decides which other units (``int8_unit``: a residual
    block, with its sum) stay float. Each unit's sensitivity is the mean cosine between the float graph's
    embeddings of the ``held_out`` faces (training faces too, other than the calibration ones) and those
    of the int8 graph that keeps only that unit float. Units are then kept float in that order, most
    sensitive first, until the int8 graph's held-out cosine reaches ``target_cosine``: the fewest float
    units, so the most speed, for that fidelity. When the whole graph already reaches the target, no unit
    is ranked. The graph's metadata records ``int8_float_units``, ``int8_sensitivity`` (unit -> cosine,
    JSON; empty when nothing was ranked) and ``int8_held_out_cosine``.

    A copy whose embeddings of the calibration faces stray from the float graph's (mean cosine below
    ``min_cosine``) is an error, never a file. The graph's metadata (card, source) is kept, with
    ``quantized`` = ``int8``.
    """
    try:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise ModelFileError(f"int8 quantization needs onnx and onnxruntime; {ONNX_HELP}") from None
    graph, out = Path(graph), Path(out)
    if len(calibration) == 0:
        raise ModelFileError(f"{graph}: int8 calibration needs at least one face")
    if target_cosine is not None and (held_out is None or len(held_out) == 0):
        raise ModelFileError(f"{graph}: per-layer sensitivity (target_cosine) needs held-out faces (held_out)")
    source = onnx.load(str(graph))
    meta = {p.key: p.value for p in source.metadata_props}
    size, layout = int(meta["input_size"]), graph_layout(meta)

    def tensors(faces: np.ndarray) -> list[np.ndarray]:
        return [graph_input(faces[i : i + batch_size], size, layout) for i in range(0, len(faces), batch_size)]

    batches = tensors(calibration)

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter({INPUT_NAME: b} for b in batches)

        def get_next(self) -> dict | None:
            return next(self.left, None)

    def embed(path: Path, xs: list[np.ndarray]) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x})[0] for x in xs])

    props = {p.key: p.value for p in source.metadata_props}
    props.update(quantized="int8", calibration_faces=str(len(calibration)))
    with atomic_path(out) as tmp:
        prepared = tmp.with_name(tmp.stem + "-prepared.onnx")
        trial = tmp.with_name(tmp.stem + "-trial.onnx")

        def quantize(to: Path, keep_float: list[str]) -> None:
            quantize_static(
                str(prepared),
                str(to),
                Faces(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=embedding + [n.name for n in nodes if int8_unit(n.name) in keep_float],
            )

        try:
            quant_pre_process(str(graph), str(prepared))  # shape inference and folding, as onnxruntime advises
            nodes = onnx.load(str(prepared)).graph.node
            embedding = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
            keep: list[str] = []
            if target_cosine is not None:
                held = tensors(held_out)
                want = embed(prepared, held)

                def held_cosine(keep_float: list[str]) -> float:
                    quantize(trial, keep_float)
                    return _mean_cosine(want, embed(trial, held))

                # The whole graph first: when it already reaches the target, no unit needs ranking.
                reached, sensitivity = held_cosine([]), {}
                if reached < target_cosine:
                    units = dict.fromkeys(
                        int8_unit(n.name) for n in nodes if n.op_type in _QUANTIZED_OPS and n.name not in embedding
                    )
                    sensitivity = {u: held_cosine([u]) for u in units}
                    for unit in sorted(units, key=lambda u: -sensitivity[u]):
                        keep.append(unit)
                        reached = held_cosine(keep)
                        if reached >= target_cosine:
                            break
                props.update(
                    int8_float_units=json.dumps(keep),
                    int8_sensitivity=json.dumps({u: round(c, 6) for u, c in sensitivity.items()}),
                    int8_held_out_cosine=f"{reached:.6f}",
                    int8_target_cosine=str(target_cosine),
                )
                trial.replace(tmp)  # the last trial is the graph that keeps ``keep`` float
            else:
                quantize(tmp, keep)
        finally:
            prepared.unlink(missing_ok=True)
            trial.unlink(missing_ok=True)
        quantized = onnx.load(str(tmp))
        onnx.helper.set_model_props(quantized, props)
        onnx.save(quantized, str(tmp))
        cosine = _mean_cosine(run_onnx(graph, batches[0]), run_onnx(tmp, batches[0]))
        if not cosine >= min_cosine:
            raise ModelFileError(
                f"{graph}: its int8 copy embeds the calibration faces at mean cosine {cosine:.3f} to the float "
                f"graph (below {min_cosine}); not written. Use the float graph"
            )
    return out


class OnnxEmbedder:
    """An exported graph on onnxruntime's CPU provider, with TorchEmbedder's preprocessing (same input path).

    Its fingerprint hashes the file, so its cached embeddings never mix with the PyTorch model's;
    ``source_fingerprint`` names the weights it was exported from (equal for both backends).
    """

    def __init__(self, path: str | Path, batch_size: int = 64, threads: int | None = None, spin: bool = True):
        """``spin=False`` lets the session's idle threads sleep at once instead of spinning for the next call:
        slower back-to-back calls on one session, but several sessions in one process (a benchmark timing
        models in turn) no longer steal the cores from the one that runs (20% of an int8 graph's speed)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: ONNX model file not found")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError(f"{self.path}: running an ONNX model needs onnxruntime; {ONNX_HELP}") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.spin = spin
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types for damaged graphs
            raise ModelFileError(f"{self.path}: not a readable ONNX model ({exc})") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "input_size" not in meta or [i.name for i in self.session.get_inputs()] != [INPUT_NAME]:
            raise ModelFileError(f"{self.path}: not a face model exported by 'aird export' (no input_size metadata)")
        self.metadata = meta
        self.card: dict = json.loads(meta["card"]) if meta.get("card") else {}
        self.name = self.path.stem
        self.input_size = int(meta["input_size"])
        self.layout = graph_layout(meta)
        self.batch_size = batch_size
        self.source_fingerprint = meta.get("source_fingerprint")
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha1(self.path.read_bytes()).hexdigest()[:16]
            self._fingerprint = f"{self.name}-onnx-{digest}-in{self.input_size}"
        return self._fingerprint

    def embed(self, faces: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(faces), self.batch_size):
            x = graph_input(faces[i : i + self.batch_size], self.input_size, self.layout)
            out.append(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
