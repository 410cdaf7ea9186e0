"""A student against the HR teacher on LFW, side by side: the README's main command (``aird compare``).

The student is the shipped one unless another student file is named. In ``hr-lr`` pairs its HR side is
the teacher (the gallery model), as deployed: enrolment photos go through the teacher, LR probes through
the student, both in the teacher's embedding space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from aird.errors import ConfigError
from aird.eval.runner import PAIR_MODES, EvalConfig, run_verification
from aird.models.embedder import Embedder, TorchEmbedder
from aird.models.export import OnnxEmbedder
from aird.models.shipped import SHIPPED_PATH, default_student_path, read_card
from aird.models.student import load_student, student_provenance
from aird.models.teacher import DlibTeacher

COMPARE_RES = (16, 12)
TAR_METRIC = "tar@far=1e-3"


@dataclass
class Student:
    embedder: TorchEmbedder | OnnxEmbedder
    path: Path
    card: dict
    method: str


def load_student_embedder(path: str | Path | None = None, batch_size: int = 64) -> Student:
    """A student file (default: the shipped one) as an embedder named by its card (else by the file name);
    a graph written by ``aird export`` (.onnx) runs on onnxruntime under its file name."""
    path = Path(path) if path is not None else default_student_path()
    if path.suffix == ".onnx":
        graph = OnnxEmbedder(path, batch_size)
        return Student(graph, path, graph.card, graph.card.get("method") or "student")
    module, meta = load_student(path)
    card = read_card(path)
    # Not the file's stem: every run's file is "student.safetensors", and two students of one name
    # would replace each other's records.
    name = card.get("name") or student_provenance(path, meta)[0]
    embedder = TorchEmbedder(module, name, int(meta["input_size"]), batch_size)
    return Student(embedder, path, card, card.get("method") or meta.get("method") or "student")


def split_student_spec(spec: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` -> (NAME, PATH); ``PATH`` -> (None, PATH). A path that itself holds "=" is taken
    whole unless what precedes the "=" is a plain name."""
    name, sep, rest = spec.partition("=")
    if sep and name and "/" not in name and not name.endswith((".safetensors", ".onnx")):
        return name, Path(rest)
    return None, Path(spec)


def with_shipped(specs: Sequence[str]) -> list[str]:
    """``specs`` with the shipped student first, unless one of them is the shipped file already."""
    shipped = SHIPPED_PATH.resolve()
    if any(split_student_spec(s)[1].resolve() == shipped for s in specs):
        return list(specs)
    return [str(SHIPPED_PATH), *specs]


def named_students(specs: Sequence[str], batch_size: int = 64) -> dict[str, Student]:
    """Student files given as ``NAME=PATH`` or ``PATH``, by name: ``NAME``, else the file's card name,
    else its run folder (``runs/<run>/student.safetensors``) or file name. Two students may not share a
    name (their records would merge)."""
    out: dict[str, Student] = {}
    for spec in specs:
        name, path = split_student_spec(spec)
        s = load_student_embedder(path, batch_size)
        label = name or s.card.get("name") or (path.parent.name if path.name == "student.safetensors" else path.stem)
        if label in out:
            raise ConfigError(f"two students named {label!r} ({out[label].path} and {path}); name each: NAME=PATH")
        out[label] = s
    return out


def compare_to_teacher(
    student: str | Path | None = None,
    res: Sequence[int] = COMPARE_RES,
    pairs: Sequence[str] = PAIR_MODES,
    folds: list[int] | None = None,
    pairs_file: str | Path | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    teacher: Embedder | None = None,
) -> list[dict]:
    """LFW verification records of the student and of the teacher at each resolution and pair mode
    (teacher first in each cell), on every pair of ``folds`` (default: all 6,000)."""
    s = load_student_embedder(student)
    teacher = teacher or DlibTeacher("torch")
    folds = list(folds) if folds else None  # None: every fold of the pairs file
    common = dict(folds=folds, pairs_file=str(pairs_file) if pairs_file else None)
    records = []
    for r in res:
        for mode in pairs:
            rec = run_verification(teacher, EvalConfig(res=r, pairs=mode, **common), root, progress).record
            records.append(rec)
            cfg = EvalConfig(res=r, pairs=mode, out_size=s.embedder.input_size, method=s.method, **common)
            rec = run_verification(s.embedder, cfg, root, progress, gallery_embedder=teacher).record
            rec["settings"]["student_file"] = str(s.path)
            if s.card.get("fingerprint"):
                rec["settings"]["card_fingerprint"] = s.card["fingerprint"]
            records.append(rec)
    return records


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def comparison_table(records: Sequence[dict]) -> str:
    """One Markdown row per (resolution, pair mode): accuracy and TAR at FAR 1e-3, teacher beside student."""
    teacher = [r for r in records if r["method"] == "teacher"]
    student = [r for r in records if r["method"] != "teacher"]
    if not teacher or not student:
        raise ValueError("comparison_table needs teacher and student records")
    t_name, s_name = teacher[0]["model"], student[0]["model"]
    by_cell = {(r["res"], r["pairs"]): r for r in teacher}
    lines = [
        f"LFW verification, {student[0]['n']:,} pairs (split {student[0]['split']}): "
        f"teacher = {t_name} (the HR model), student = {s_name}; hr-lr = the HR face by the teacher, the LR face "
        "by the model in the column; figures in %",
        "",
        "| px | pairs | teacher accuracy | student accuracy | gain (points) | teacher TAR@FAR=1e-3 "
        "| student TAR@FAR=1e-3 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for srec in student:
        trec = by_cell.get((srec["res"], srec["pairs"]))
        t_acc = trec["metrics"].get("accuracy") if trec else None
        s_acc = srec["metrics"].get("accuracy")
        gain = "—" if t_acc is None or s_acc is None else f"{100 * (s_acc - t_acc):+.2f}"
        t_tar = trec["metrics"].get(TAR_METRIC) if trec else None
        lines.append(
            f"| {srec['res']} | {srec['pairs']} | {_pct(t_acc)} | {_pct(s_acc)} | {gain} "
            f"| {_pct(t_tar)} | {_pct(srec['metrics'].get(TAR_METRIC))} |"
        )
    return "\n".join(lines) + "\n"
