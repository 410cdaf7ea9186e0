"""benchmarks/facebn_seeds.py: a mode's difference from `off` per stream seed and on the mean over seeds;
a stream losing under one seed only is not counted as losing under every seed; bad folders are clear errors."""

import json
import sys
from pathlib import Path

import pytest

from aird.eval.records import make_record, paired_difference, write_records

sys.path.insert(0, str(Path(__file__).parent))
from small_run import load_benchmark  # noqa: E402

PROBES = 10


@pytest.fixture(scope="module")
def facebn_seeds():
    return load_benchmark("facebn_seeds")


def orl_record(stream: str, adapt: str, hits: str, seed: int | None) -> dict:
    adaptation = {"adapter": adapt, "order": stream.split("/")[0]}
    if seed is not None:
        adaptation["stream_seed"] = seed
    return make_record(
        benchmark=f"orl@{stream}",
        task="identification",
        model="student",
        method="aird",
        adapt=adapt,
        res=12,
        pairs=None,
        split="orl",
        n=PROBES,
        metrics={"rank1": hits.count("1") / PROBES},
        settings={"adaptation": adaptation, "probe_hits": hits},
    )


def write_seed(folder: Path, seed: int, safe_hits: dict[str, str]) -> Path:
    off = {"shuffled/b1": "1111100000", "day-night/b1": "1110000000"}
    records = []
    for stream, hits in safe_hits.items():
        # `off` on a shuffled stream is one static evaluation (no seed); a timed shift's is per order.
        records.append(orl_record(stream, "off", off[stream], seed if stream.startswith("day-night") else None))
        records.append(orl_record(stream, "facebn-safe", hits, seed))
    folder.mkdir(parents=True)
    write_records(folder / "facebn.json", records, f"python benchmarks/facebn.py --seed {seed}", merge=False)
    return folder


def test_differences_per_seed_and_on_the_mean(facebn_seeds, tmp_path):
    runs = [
        # shuffled: +2 probes then -1 probe (mean +0.5 probe = +5 points); day-night: -1 probe under both seeds
        write_seed(tmp_path / "s0", 0, {"shuffled/b1": "1111111000", "day-night/b1": "1100000000"}),
        write_seed(tmp_path / "s1", 1, {"shuffled/b1": "1111000000", "day-night/b1": "0110000000"}),
    ]
    records = facebn_seeds.seed_records(facebn_seeds.load_runs(runs), "cmd")
    by_stream = {r["benchmark"]: r for r in records}
    assert set(by_stream) == {"orl@shuffled/b1", "orl@day-night/b1"}  # `off` has no record of its own
    shuffled, night = by_stream["orl@shuffled/b1"], by_stream["orl@day-night/b1"]
    assert [p["difference"] for p in shuffled["settings"]["per_seed"].values()] == pytest.approx([20.0, -10.0])
    assert shuffled["settings"]["difference_mean"] == pytest.approx(5.0)
    assert shuffled["metrics"]["rank1"] == pytest.approx(0.55)
    assert night["settings"]["difference_mean"] == pytest.approx(-10.0)
    assert night["settings"]["stream_seeds"] == [0, 1]

    text = "\n".join(facebn_seeds.tables(records))
    # below the bar: seed 0 one stream (day-night), seed 1 both; on the mean and under every seed: day-night
    assert "| student | facebn-safe | 2 | 1 / 2 | 1 | 1 | -2.50 |" in text


def test_main_writes_records_and_tables(facebn_seeds, tmp_path, monkeypatch):
    runs = [
        write_seed(tmp_path / f"s{s}", s, {"shuffled/b1": "1111110000", "day-night/b1": "1110000000"}) for s in (0, 1)
    ]
    out = tmp_path / "out"
    argv = ["facebn_seeds.py", "--runs", *map(str, runs), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    facebn_seeds.main()
    doc = json.loads((out / "facebn-seeds.json").read_text())
    assert doc["command"].startswith("python benchmarks/facebn_seeds.py --runs")
    assert len(doc["records"]) == 2
    assert "seed 0 | seed 1 | mean" in (out / "facebn-seeds.md").read_text()


def test_a_folder_of_two_seeds_or_a_repeated_seed_is_an_error(facebn_seeds, tmp_path):
    a = write_seed(tmp_path / "a", 0, {"day-night/b1": "1100000000"})
    b = write_seed(tmp_path / "b", 0, {"day-night/b1": "1100000000"})
    with pytest.raises(SystemExit, match="two folders hold stream seed 0"):
        facebn_seeds.load_runs([a, b])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    recs = [orl_record("day-night/b1", "off", "1100000000", 0), orl_record("day-night/b8", "off", "1100000000", 1)]
    write_records(mixed / "facebn.json", recs, "cmd", merge=False)
    with pytest.raises(SystemExit, match="seeds 0, 1"):
        facebn_seeds.load_runs([mixed])
    with pytest.raises(SystemExit, match="not found"):
        facebn_seeds.load_runs([tmp_path / "nowhere"])


def test_paired_difference_over_probes_and_folds():
    a = {"settings": {"probe_hits": "1100"}}
    b = {"settings": {"probe_hits": "1000"}}
    mean, se = paired_difference(a, b)
    assert mean == pytest.approx(25.0) and se == pytest.approx(25.0)
    folds = paired_difference(
        {"settings": {"fold_accuracies": [0.9, 0.8]}}, {"settings": {"fold_accuracies": [0.8, 0.8]}}
    )
    assert folds[0] == pytest.approx(5.0)
    assert paired_difference({"settings": {}}, b) is None
