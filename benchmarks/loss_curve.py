"""Has the loss stopped falling? Per-epoch means of every loss term of finished runs, from their logs.

    python benchmarks/loss_curve.py --run runs/aird-shipped-all --run runs/aird-fast-all

Each run directory's ``log.jsonl`` (written by ``aird distill`` every few steps) gives the total loss and
each term (``cls``, ``ild``, ``rld``). This script averages them per epoch, prints the table, and writes
docs/results/loss_curve.json (the per-epoch means, with each run's config) and loss_curve.png (each term
relative to its first epoch). The last column says what the last epoch still took off the total loss,
as a share of everything the run took off: a few percent means the schedule has run its course.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from aird.errors import ConfigError
from aird.eval.plots import plot_training_curves
from aird.eval.records import git_commit
from aird.io import write_json

REPO = Path(__file__).resolve().parents[1]
TERMS = ("loss", "cls", "ild", "rld")


def epoch_means(run: Path) -> dict[str, list[float]]:
    log = run / "log.jsonl"
    if not log.is_file():
        raise ConfigError(f"{run}: no log.jsonl; give a run directory written by 'aird distill'")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r and "epoch" in r]
    if not rows:
        raise ConfigError(f"{log}: no training steps logged")
    epochs = sorted({r["epoch"] for r in rows})
    return {
        t: [float(np.mean([r[t] for r in rows if r["epoch"] == e])) for e in epochs]
        for t in TERMS
        if all(t in r for r in rows)
    }


def last_epoch_share(total: list[float]) -> float | None:
    """What the last epoch took off the total loss, as a share of what the whole run took off."""
    fall = total[0] - total[-1]
    return None if len(total) < 2 or fall <= 0 else (total[-2] - total[-1]) / fall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True, help="a run directory (repeat)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "loss_curve")
    args = ap.parse_args()
    command = "python benchmarks/loss_curve.py " + shlex.join(sys.argv[1:])
    curves, runs = {}, {}
    for run in args.run:
        means = epoch_means(run)
        config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
        name = run.name
        curves[name] = means
        share = last_epoch_share(means["loss"])
        runs[name] = {"epoch_means": means, "last_epoch_share_of_fall": share, "config": config}
        if share is None:
            said = "the run took nothing off the loss"
        elif share < 0:
            said = f"the last epoch's mean rose by {-share:.1%} of the run's total fall: flat"
        else:
            said = f"the last epoch took off {share:.1%} of the run's total fall"
        print(f"\n{name}: {len(means['loss'])} epochs; {said}")
        print("epoch " + " ".join(f"{t:>8}" for t in means))
        for e in range(len(means["loss"])):
            print(f"{e + 1:>5} " + " ".join(f"{means[t][e]:8.4f}" for t in means))
    write_json(args.out.with_suffix(".json"), {"runs": runs, "command": command, "git_commit": git_commit()})
    plot_training_curves(curves, args.out.with_suffix(".png"), title="Training loss per epoch (mean over the epoch)")
    print(f"\nwrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
