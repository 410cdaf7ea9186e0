"""Does stream adaptation help on this camera? A paired measurement on the camera's own labelled crops.

What a stream adapter gains depends on the student file and on the camera, not on the training recipe
alone (docs/facebn.md, "A third training run": two runs of one command gained +3.3 and +0.7 points from the
same adapter on the same streams). So the recognizer adapts nothing by default, and a camera is switched
on where it is measured to help. This is that measurement. The camera's face crops, in the order it took
them, are played once through the stream adapter (each embedded as it arrives, as a deployment serves it)
and once through the plain model; each embedding is searched in a gallery of the people the crops show.
The rank-1 difference, paired over the probes, and its standard error decide:

- ``helps`` when its one-sided 95% lower bound (difference - 1.645 standard errors) is above zero;
- ``hurts`` when its upper bound (difference + 1.645 standard errors) is below zero;
- ``no clear difference`` otherwise: keep the camera on ``off`` (more probes narrow the bound).

The open-set rate (named, and accepted by the model card's threshold at FAR 1e-3) is reported beside it with
its own paired standard error, not decided on: the thresholds were calibrated on unadapted faces, so a
camera run as a watch list should read that line as well.

Only LR crops (under ``HR_MIN_PX``) are adapted, so only they are counted. Probes come as one sub-folder
per gallery person; the stream's order is the files' names across all folders (camera files are usually
named by their time), their modification times, or folder by folder (bursts of one person).
"""

from __future__ import annotations

import math
import secrets
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aird.data.folders import natural_key
from aird.data.inputs import expand_paths
from aird.errors import ConfigError, DataError
from aird.eval.metrics import far_key
from aird.eval.records import environment, make_record, paired_difference
from aird.results import HR_MIN_PX, Skipped

if TYPE_CHECKING:
    from aird.gallery import Gallery
    from aird.recognizer import Recognizer

Order = Literal["name", "mtime", "folder"]
ORDERS: tuple[str, ...] = ("name", "mtime", "folder")
Z_ONE_SIDED_95 = 1.645
FAR = 1e-3
DIR = far_key("dir", FAR)  # the open-set rate's metric name


def verdict(difference: float, se: float) -> str:
    """``helps``, ``hurts`` or ``no clear difference``, from a paired difference and its standard error (points)."""
    if difference - Z_ONE_SIDED_95 * se > 0:
        return "helps"
    if difference + Z_ONE_SIDED_95 * se < 0:
        return "hurts"
    return "no clear difference"


@dataclass
class AdaptCheck:
    """The outcome of :func:`check_adaptation`: both records, the difference and what to do."""

    adapt: str
    adapted: dict  # the adapted run's result record (RESULTS.md shape)
    off: dict  # the unadapted run's, on the same probes
    difference: float  # rank-1 points, adapted minus off
    se: float  # its standard error, paired over the probes
    identified_difference: float  # the same for the open-set rate (named and accepted at FAR)
    identified_se: float
    verdict: str
    stream_info: dict[str, Any]
    excluded_people: list[str] = field(default_factory=list)  # probe folders naming no one in the gallery
    hr_probes: int = 0  # crops of HR_MIN_PX or more: not adapted, not counted
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        return [self.off, self.adapted]

    def plot(self, path: str | Path) -> Path:
        """Rank-1 of the probes seen so far along the stream, adapted and off (PNG)."""
        from aird.eval.plots import plot_stream_check

        hits = {r["adapt"]: [int(c) for c in r["settings"]["probe_hits"]] for r in (self.adapted, self.off)}
        s = self.adapted["settings"]
        title = f"{s['probes']}: {self.adapt} against off, {s['adaptation']['test_batch_size']} per step"
        return plot_stream_check(hits, path, title=title)

    def summary(self) -> str:
        a, o = self.adapted, self.off
        s = a["settings"]
        lines = [
            f"camera crops: {a['n']} LR probes of {s['people']} people (median {a['res']} px), "
            f"in {s['adaptation']['order']} order, {s['adaptation']['test_batch_size']} per adaptation step",
            f"rank-1: off {100 * o['metrics']['rank1']:.2f}%, {self.adapt} {100 * a['metrics']['rank1']:.2f}%: "
            f"{self.difference:+.2f} ± {self.se:.2f} points (paired over the probes)",
            f"identified at FAR {DIR.split('=')[1]} (named and accepted): off {100 * o['metrics'][DIR]:.2f}%, "
            f"{self.adapt} {100 * a['metrics'][DIR]:.2f}%: "
            f"{self.identified_difference:+.2f} ± {self.identified_se:.2f} points",
        ]
        details = self.stream_info.get("details") or {}
        if details:
            shown = ("layers_from", "anchor_angle", "resets", "rejected_invalid", "rejected_outlier")
            lines.append("the stream ended with: " + ", ".join(f"{k} {details[k]}" for k in shown if k in details))
        if self.verdict == "helps":
            lines.append(
                f"verdict: {self.adapt} helps on this camera: name it for this camera's stream "
                f"(aird serve --adapt {self.adapt} --adapt-streams CAMERA; aird.load(adapt={self.adapt!r}, "
                f"adapt_streams=['CAMERA']))"
            )
            if verdict(self.identified_difference, self.identified_se) == "hurts":
                lines.append(
                    "  but fewer faces are named at the threshold (the open-set line above): for a watch list, "
                    "weigh that before switching it on"
                )
        elif self.verdict == "hurts":
            lines.append(f"verdict: {self.adapt} hurts on this camera: keep it off")
        else:
            lines.append(
                "verdict: no clear difference (the 95% bound spans zero): keep this camera off, or check again "
                "with more probes"
            )
        return "\n".join(lines)


def _labelled_probes(folder: Path, people: set[str], order: str) -> tuple[list[Path], dict[str, str], list[str]]:
    """The probe files in stream order, each file's person, and the sub-folders naming no one in the gallery."""
    if not folder.is_dir():
        raise DataError("not a folder", folder, fix="give a folder with one sub-folder of face crops per person")
    subfolders = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if not subfolders:
        raise DataError(
            "holds no sub-folder of face crops",
            folder,
            fix="put each person's crops in a sub-folder named as the person is enrolled in the gallery",
        )
    files: list[Path] = []
    label: dict[str, str] = {}
    excluded: list[str] = []
    for sub in subfolders:
        if sub.name not in people:
            excluded.append(sub.name)
            continue
        for f in expand_paths([sub]):
            files.append(f)
            label[str(f)] = sub.name
    if not files:
        known = ", ".join(sorted(people)[:10]) + (", ..." if len(people) > 10 else "")
        raise DataError(
            f"no sub-folder with files names a person of the gallery (folders: {', '.join(excluded) or 'none'}; "
            f"gallery: {known})",
            folder,
            fix="name each sub-folder as its person is enrolled (aird gallery list --gallery G)",
        )
    if order == "name":
        files.sort(key=lambda f: (natural_key(f), str(f)))
    elif order == "mtime":
        files.sort(key=lambda f: (f.stat().st_mtime, str(f)))
    return files, label, excluded


def _rank1_record(
    recognizer: Recognizer,
    gallery: Gallery,
    faces: list,
    label: dict[str, str],
    adapt: str,
    settings: dict,
) -> dict:
    results = gallery.search(faces, top_k=1, far=FAR)
    hits = [int(bool(r.candidates) and r.candidates[0].name == label[r.probe.source]) for r in results]
    found = [int(r.status == "match" and r.name == label[r.probe.source]) for r in results]
    return make_record(
        benchmark=settings["benchmark"],
        task="identification",
        model=recognizer.name,
        method=str(recognizer.card.get("method") or "unknown"),
        adapt=adapt,
        res=int(statistics.median(f.face_px for f in faces)),
        pairs=None,
        split="all",
        n=len(faces),
        metrics={"rank1": sum(hits) / len(hits), DIR: sum(found) / len(found)},
        settings={
            "model_fingerprint": recognizer.fingerprint,
            "student_fingerprint": recognizer.student_fingerprint,
            **{k: v for k, v in settings.items() if k != "benchmark"},
            "probe_hits": "".join(map(str, hits)),
            "probe_identified": "".join(map(str, found)),  # named, and accepted at FAR (open set)
            "environment": environment(),
        },
    )


def check_adaptation(
    recognizer: Recognizer,
    gallery: Gallery,
    probes: str | Path,
    order: Order = "name",
    progress: bool = False,
) -> AdaptCheck:
    """Measure ``recognizer``'s stream adaptation against ``off`` on one camera's labelled crops.

    ``recognizer`` is loaded with the mode to check and the camera's batch size (``aird.load(model,
    adapt="facebn-safe", batch_size=1)``); ``gallery`` holds the people the crops show, enrolled with that
    recognizer; ``probes`` is a folder with one sub-folder of crops per person, named as the person is
    enrolled. A fresh stream is used, so no camera's state is touched."""
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    adapt = recognizer.streams.settings()["adapter"]
    if adapt == "off":
        raise ConfigError(
            "the recognizer adapts nothing (adapt='off'): load it with the mode to check, "
            "e.g. aird.load(model, adapt='facebn-safe', batch_size=1)"
        )
    folder = Path(probes)
    people = {p.name for p in gallery.list()}
    if not people:
        raise DataError(
            "the gallery holds no one", gallery.path, fix="enrol the people first: aird enrol --gallery G FOLDER"
        )
    files, label, excluded = _labelled_probes(folder, people, order)
    started = time.time()
    stream = f"adapt-check-{secrets.token_hex(4)}"  # a stream of its own: no camera's state is read or moved
    if not recognizer.streams.adapts(stream):
        raise ConfigError(
            "the recognizer adapts only the streams in its adapt_streams list: load it without that list for the "
            "check, e.g. aird.load(model, adapt='facebn-safe', batch_size=1)"
        )
    adapted, skipped = recognizer.represent_files(
        files, cropped=True, stream=stream, progress=progress, desc="adapted stream"
    )
    plain, _ = recognizer.represent_files(files, cropped=True, progress=progress, desc="unadapted")
    info = recognizer.streams.show(stream).to_dict()
    recognizer.streams.reset(stream)
    adapted = [f for f in adapted if f.found and f.route == "lr"]
    plain = [f for f in plain if f.found and f.route == "lr"]
    if [f.source for f in adapted] != [f.source for f in plain]:  # both passes read the same files alike
        raise DataError("the probe files changed while they were read; run the check again", folder)
    hr = len(files) - len(skipped) - len(adapted)
    if len(adapted) < 2:
        raise DataError(
            f"{len(adapted)} LR face crop(s) to measure ({hr} at {HR_MIN_PX} px or more, which the adapter never "
            f"touches; {len(skipped)} unreadable)",
            folder,
            fix=f"give the camera's crops as they come (faces under {HR_MIN_PX} px), at least a few hundred",
        )
    settings = {
        "benchmark": f"camera:{folder.name}",
        "probes": str(folder),
        "gallery": str(gallery.path),
        "people": len({label[f.source] for f in adapted}),
        "excluded_people": excluded,
        "hr_probes": hr,
        "skipped_images": [{"source": s.source, "reason": s.reason} for s in skipped],
        "wall_s": round(time.time() - started, 2),
    }
    stream_settings = {"order": order, "test_batch_size": recognizer.batch_size, "stream": "a fresh one"}
    adapted_rec = _rank1_record(
        recognizer,
        gallery,
        adapted,
        label,
        adapt,
        {
            **settings,
            "adaptation": {
                **recognizer.streams.settings(),
                **stream_settings,
                "embedding": "each face as it arrived",
                "stream_info": info,
            },
        },
    )
    off_rec = _rank1_record(
        recognizer, gallery, plain, label, "off", {**settings, "adaptation": {"adapter": "off", **stream_settings}}
    )
    difference, se = paired_difference(adapted_rec, off_rec, keys=("probe_hits",)) or (0.0, math.inf)
    identified = paired_difference(adapted_rec, off_rec, keys=("probe_identified",)) or (0.0, math.inf)
    return AdaptCheck(
        adapt=adapt,
        adapted=adapted_rec,
        off=off_rec,
        difference=difference,
        se=se,
        identified_difference=identified[0],
        identified_se=identified[1],
        verdict=verdict(difference, se),
        stream_info=info,
        excluded_people=excluded,
        hr_probes=hr,
        skipped=list(skipped),
    )
