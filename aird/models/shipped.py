"""The student that ships inside the package, and the model card every student file may carry.

The card is a JSON string under the ``card`` key of a student file's safetensors metadata (or of an
exported ONNX graph's ``metadata_props``): architecture, input, trained resolutions, training pools,
the LFW figures it reached and verification thresholds calibrated on LFW (see docs/shipped.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from aird.errors import ModelFileError

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_PATH = ASSETS / "aird_shipped.safetensors"
SHIPPED_NAME = "aird-shipped"
BUILD_COMMAND = "aird distill --config configs/shipped.yaml && python benchmarks/shipped.py --run runs/aird-shipped-all"
# The fast student (lr_resnet, 16 px), bridge-distilled from the shipped one: for many cameras on one CPU.
FAST_PATH = ASSETS / "aird_fast.safetensors"
FAST_BUILD_COMMAND = (
    "aird distill --config configs/fast.yaml && python benchmarks/shipped.py --which fast --run runs/aird-fast-all"
)
# The pruned student (the shipped one with half of every block's inner channels, 104 px), fine-tuned from it:
# for many cameras where the fast one loses too much; about 2,500 faces/s exported to int8 (docs/pruned.md).
PRUNED_PATH = ASSETS / "aird_pruned.safetensors"
PRUNED_BUILD_COMMAND = (
    "aird distill --config configs/ablations/prune-slim50-12ep.yaml && "
    "python benchmarks/shipped.py --which pruned --run runs/prune-slim50-12ep-all"
)
# The students that ship, by the name users pass as a model ("shipped" is also the default).
SHIPPED_STUDENTS = ("shipped", "fast", "pruned")


def default_student_path() -> Path:
    """The shipped student file; ModelFileError naming the command that builds it when it is absent."""
    return shipped_student_path("shipped")


def shipped_student_path(which: str = "shipped") -> Path:
    """The file of a shipped student by name (``shipped``: the main one, ``fast``: the 16 px one, ``pruned``:
    the main one with half its inner channels)."""
    files = {
        "shipped": (SHIPPED_PATH, BUILD_COMMAND),
        "fast": (FAST_PATH, FAST_BUILD_COMMAND),
        "pruned": (PRUNED_PATH, PRUNED_BUILD_COMMAND),
    }
    if which not in files:
        raise ModelFileError(f"no shipped student named {which!r}; the package ships {', '.join(SHIPPED_STUDENTS)}")
    path, command = files[which]
    if not path.is_file():
        raise ModelFileError(
            f"{path}: the {which} student is not in this checkout; build it with: {command} "
            "(or pass --model with any student .safetensors written by 'aird distill')"
        )
    return path


def _metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if path.suffix == ".onnx":
        try:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
        except ImportError:
            raise ModelFileError(f"{path}: reading ONNX needs the onnx package (pip install 'aird[onnx]')") from None
        except Exception as exc:  # onnx raises protobuf's DecodeError and others for damaged files
            raise ModelFileError(f"{path}: not a readable ONNX file ({exc})") from None
        return {p.key: p.value for p in model.metadata_props}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None


def read_card(path: str | Path) -> dict:
    """The model card of a student file (.safetensors) or an exported graph (.onnx); {} when it has none."""
    path = Path(path)
    return parse_card(_metadata(path).get("card"), path)


def parse_card(text: str | None, path: str | Path) -> dict:
    """The model card held in a file's ``card`` metadata string; {} when there is none."""
    if not text:
        return {}
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: the model card in its metadata is not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelFileError(f"{path}: the model card in its metadata is not a JSON object")
    return card


def write_card(path: str | Path, card: dict) -> None:
    """Replace the model card of a student ``.safetensors`` file; its tensors are written back byte for byte
    (so its fingerprint stays), atomically."""
    from safetensors.torch import load_file, save_file

    from aird.io import atomic_path

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelFileError(f"{path}: only a student .safetensors file's card can be rewritten")
    meta = _metadata(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={**meta, "card": json.dumps(card)})
