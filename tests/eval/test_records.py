"""Result records: validation, merging, reading back, tables."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from aird.errors import DataError
from aird.eval.records import (
    environment,
    git_commit,
    identity,
    load_records,
    make_record,
    markdown_table,
    write_records,
)


def rec(**over):
    fields = dict(
        benchmark="lfw",
        task="verification",
        model="r18-lr",
        method="aird",
        adapt="off",
        res=16,
        pairs="lr-lr",
        split="all",
        n=6000,
        metrics={"accuracy": 0.9, "auc": 0.95},
        settings={"seed": 0},
    )
    fields.update(over)
    return fields


# ---------------------------------------------------------------------------- make_record


def test_make_record_orders_keys_and_converts_numbers():
    r = make_record(
        **rec(res=np.int64(16), metrics={"accuracy": np.float32(0.5), "faces_per_s": 1234}, note="extra keys kept")
    )
    assert list(r)[:11] == [
        "benchmark",
        "task",
        "model",
        "method",
        "adapt",
        "res",
        "pairs",
        "split",
        "n",
        "metrics",
        "settings",
    ]
    assert r["note"] == "extra keys kept"
    assert type(r["res"]) is int and r["res"] == 16
    assert r["metrics"] == {"accuracy": 0.5, "faces_per_s": 1234.0}
    assert all(type(v) is float for v in r["metrics"].values())
    json.dumps(r)  # plain JSON types only


def test_make_record_identification_has_null_pairs():
    r = make_record(**rec(task="identification", pairs=None, metrics={"rank1": 0.8, "dir@far=1e-2": 0.6}))
    assert r["pairs"] is None


def test_timing_metrics_may_exceed_one():
    r = make_record(
        **rec(metrics={"faces_per_s": 900.0, "p50_ms": 2.5, "p99_ms": 7.0, "wall_s": 3600.0, "load_ms": 12.0})
    )
    assert r["metrics"]["wall_s"] == 3600.0


@pytest.mark.parametrize(
    "over, key",
    [
        ({"metrics": {"accuracy": 1.2}}, "accuracy"),
        ({"metrics": {"eer": -0.1}}, "eer"),
        ({"metrics": {"auc": None}}, "auc"),
        ({"metrics": {"auc": float("nan")}}, "auc"),
        ({"metrics": {"auc": "0.9"}}, "auc"),
        ({"metrics": {"auc": True}}, "auc"),
        ({"metrics": {"threshold_mean": 1.7}}, "threshold_mean"),
        ({"metrics": {"p50_ms": -1.0}}, "p50_ms"),
        ({"res": 16.0}, "res"),
        ({"res": True}, "res"),
        ({"res": 0}, "res"),
        ({"n": "6000"}, "n"),
        ({"benchmark": ""}, "benchmark"),
        ({"model": 3}, "model"),
        ({"task": "detection"}, "task"),
        ({"pairs": None}, "pairs"),
        ({"task": "identification"}, "pairs"),
        ({"metrics": [0.9]}, "metrics"),
        ({"settings": None}, "settings"),
    ],
)
def test_make_record_names_the_bad_key(over, key):
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        make_record(**rec(**over))


def test_make_record_names_missing_keys():
    fields = rec()
    del fields["split"], fields["settings"]
    with pytest.raises(ValueError, match="missing required keys: split, settings"):
        make_record(**fields)


# ---------------------------------------------------------------------------- environment


def test_environment_fields():
    env = environment()
    assert set(env) == {"python", "torch", "numpy", "dlib", "platform", "cpu_count", "git_commit", "timestamp_utc"}
    assert env["numpy"] == np.__version__
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert env["timestamp_utc"].endswith("+00:00")
    json.dumps(env)


def test_git_commit(tmp_path):
    assert git_commit(tmp_path) is None  # not a repository
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert git_commit(tmp_path) is None  # a repository without commits
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == head


# ---------------------------------------------------------------------------- write, merge, load


def test_write_merge_replaces_same_identity_in_place(tmp_path):
    path = tmp_path / "results" / "lfw.json"
    write_records(path, [rec(method="none"), rec(method="kd")], "python run.py --method none,kd")
    write_records(
        path, [rec(method="kd", metrics={"accuracy": 0.5}), rec(method="aird")], "python run.py --method kd,aird"
    )
    data = json.loads(path.read_text())
    assert data["command"] == "python run.py --method kd,aird"
    assert [r["method"] for r in data["records"]] == ["none", "kd", "aird"]
    kd = data["records"][1]
    assert kd["metrics"] == {"accuracy": 0.5}  # replaced whole, not merged metric by metric
    # Each record keeps the command that made it, since the file's command is only the latest.
    assert data["records"][0]["settings"]["command"] == "python run.py --method none,kd"
    assert kd["settings"]["command"] == "python run.py --method kd,aird"
    assert load_records(path) == data["records"]
    # No temporary left behind; the merge's lock sidecar stays (deleting it would race other writers).
    assert sorted(p.name for p in path.parent.iterdir()) == [".lfw.json.lock", "lfw.json"]


def test_merge_key_covers_every_identity_field(tmp_path):
    path = tmp_path / "r.json"
    base = rec()
    variants = [
        rec(),
        rec(res=8),
        rec(pairs="hr-lr"),
        rec(split="A"),
        rec(adapt="facebn-ema"),
        rec(model="other"),
        rec(benchmark="lfw-shift:blur"),
        rec(task="identification", pairs=None, metrics={"rank1": 0.5}),
    ]
    write_records(path, variants, "cmd")
    write_records(path, [dict(base, n=10)], "cmd2")
    records = load_records(path)
    assert len(records) == len(variants)
    assert records[0]["n"] == 10 and all(r["n"] == 6000 for r in records[1:])


def test_merge_keeps_top_level_keys_and_sets_new_ones(tmp_path):
    path = tmp_path / "r.json"
    write_records(path, [rec(method="none")], "cmd1", top={"default_adapt": "off", "note": "kept"})
    write_records(path, [rec(method="kd")], "cmd2", top={"default_adapt": "facebn-safe"})
    data = json.loads(path.read_text())
    assert data["default_adapt"] == "facebn-safe" and data["note"] == "kept" and data["command"] == "cmd2"
    assert sorted(r["method"] for r in data["records"]) == ["kd", "none"]


def test_results_file_has_one_record_per_line(tmp_path):
    path = tmp_path / "r.json"
    write_records(path, [rec(method="none"), rec(method="kd")], "cmd", top={"default_adapt": "off"})
    lines = path.read_text().splitlines()
    assert sum('"benchmark"' in line for line in lines) == 2 and len(lines) == 8
    assert [r["method"] for r in json.loads(path.read_text())["records"]] == ["none", "kd"]


def test_write_without_merge_replaces_the_file(tmp_path):
    path = tmp_path / "r.json"
    write_records(path, [rec(method="none"), rec(method="kd")], "a")
    write_records(path, [rec(method="aird")], "b", merge=False)
    assert [r["method"] for r in load_records(path)] == ["aird"]


def test_write_rejects_duplicates_bad_records_and_bad_files(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(ValueError, match="same identity"):
        write_records(path, [rec(), rec(n=5)], "cmd")
    with pytest.raises(ValueError, match="'accuracy'"):
        write_records(path, [rec(metrics={"accuracy": 90.0})], "cmd")
    with pytest.raises(ValueError, match="command"):
        write_records(path, [rec()], "")
    assert not path.exists()
    path.write_text("{not json")
    with pytest.raises(DataError, match="r.json"):
        write_records(path, [rec()], "cmd")  # never silently overwrite a file it cannot read
    assert path.read_text() == "{not json"


def test_load_records_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_records(tmp_path / "missing.json")
    path = tmp_path / "r.json"
    path.write_text(json.dumps([rec()]))
    with pytest.raises(DataError, match="not a results file"):
        load_records(path)
    path.write_text(json.dumps({"records": [rec(), rec(metrics={"auc": 2.0})], "command": "x"}))
    with pytest.raises(DataError, match="record 1: .*'auc'"):
        load_records(path)


# ---------------------------------------------------------------------------- markdown


def test_markdown_table_pivot():
    records = [
        make_record(**r)
        for r in [
            rec(method="none", res=8, metrics={"accuracy": 0.7}),
            rec(method="none", res=150, metrics={"accuracy": 0.99}),
            rec(method="aird", res=8, metrics={"accuracy": 0.8512}),
            rec(method="aird", res=32, metrics={"auc": 0.9}),  # no accuracy: a gap, not a zero
            rec(method="none", res=32, metrics={"accuracy": 0.9}),
        ]
    ]
    assert markdown_table(records, ["method", "adapt"], "res", "accuracy") == (
        "| method | adapt | res=150 | res=32 | res=8 |\n"
        "|---|---|---:|---:|---:|\n"
        "| none | off | 99.0% | 90.0% | 70.0% |\n"
        "| aird | off | — | — | 85.1% |\n"
    )


def test_markdown_table_string_columns_keep_first_seen_order_and_format():
    records = [
        make_record(**r)
        for r in [
            rec(pairs="lr-lr", metrics={"eer": 0.1}),
            rec(pairs="hr-lr", metrics={"eer": 0.05}),
            rec(task="identification", pairs=None, metrics={"rank1": 0.5}),
        ]
    ]
    assert markdown_table(records, ["model"], "pairs", "eer", fmt="{:.3f}") == (
        "| model | pairs=lr-lr | pairs=hr-lr | pairs=null |\n|---|---:|---:|---:|\n| r18-lr | 0.100 | 0.050 | — |\n"
    )


def test_markdown_table_refuses_two_records_in_one_cell():
    records = [make_record(**rec(split="A")), make_record(**rec(split="B"))]
    with pytest.raises(ValueError, match="two records"):
        markdown_table(records, ["method"], "res", "accuracy")
    with pytest.raises(ValueError, match="'nokey'"):
        markdown_table(records, ["nokey"], "res", "accuracy")


def test_a_capture_shift_is_another_benchmark():
    """`aird eval --grayscale --out results.json` wrote its record as `lfw` and replaced the colour one."""
    from aird.eval.runner import EvalConfig, benchmark_name

    assert benchmark_name("lfw", EvalConfig()) == "lfw"
    assert benchmark_name("lfw", EvalConfig(grayscale=True)) == "lfw-shift:grayscale"
    both = EvalConfig(blur_sigma=2.0, jpeg_quality=20, gamma=2.5, crop="jittered")
    assert benchmark_name("orl", both) == "orl-crop:jittered-shift:blur2+jpeg20+gamma2.5"
    clean = make_record(**rec())
    grey = make_record(**rec(benchmark=benchmark_name("lfw", EvalConfig(grayscale=True))))
    assert identity(clean) != identity(grey)
