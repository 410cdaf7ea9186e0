"""Metrics against values worked out by hand on a few scores each."""

from __future__ import annotations

import numpy as np
import pytest

from aird.eval.metrics import (
    best_threshold,
    cmc,
    cosine_similarity,
    dir_at_far,
    eer,
    far_key,
    identification_metrics,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    similarity_matrix,
    tar_at_far,
    verification_metrics,
)

# Six pairs, scores 1..6 so midpoints are exact. Genuine: 3, 5, 6; impostor: 1, 2, 4.
S6 = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
Y6 = np.array([0, 0, 1, 0, 1, 1])
SEPARABLE = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 1, 1]))
INVERTED = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 0, 0]))
# A genuine and an impostor pair share the score 2.
TIED = (np.array([3.0, 2.0, 2.0, 1.0]), np.array([1, 1, 0, 0]))


# ---------------------------------------------------------------------------- similarity


def test_cosine_similarity_paired_rows_and_zero_rows():
    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [4.0, -3.0], [5.0, 5.0], [-1.0, -1.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [1.0, 0.0, 0.0, -1.0], atol=1e-12)


def test_similarity_matrix_with_zero_row_has_no_nan():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    sim = similarity_matrix(a, b)
    assert sim.shape == (2, 4)
    np.testing.assert_allclose(sim, [[0.0, 1.0, 2**-0.5, 0.0], [0.0, 0.0, 0.0, 0.0]], atol=1e-12)


def test_similarity_shape_errors():
    with pytest.raises(ValueError, match="equal shapes"):
        cosine_similarity(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="embedding sizes"):
        similarity_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        similarity_matrix(np.ones(3), np.ones((2, 3)))


# ---------------------------------------------------------------------------- ROC, AUC, EER, TAR


def test_roc_curve_by_hand():
    fpr, tpr, thr = roc_curve(S6, Y6)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 6, 5, 4, 3, 2, 1])


def test_roc_curve_tied_scores_move_together():
    fpr, tpr, thr = roc_curve(*TIED)
    # No point may accept the tied genuine pair without the tied impostor: (0, 1) must not appear.
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 3, 2, 1])
    order = np.array([2, 0, 3, 1])
    for got, want in zip(roc_curve(TIED[0][order], TIED[1][order]), (fpr, tpr, thr)):
        np.testing.assert_array_equal(got, want)


def test_roc_needs_both_classes_and_clean_input():
    with pytest.raises(ValueError, match="both genuine"):
        roc_curve(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        roc_curve(np.array([0.1, np.nan]), np.array([1, 0]))
    with pytest.raises(ValueError, match="0/1"):
        roc_curve(np.array([0.1, 0.2]), np.array([1, 2]))
    with pytest.raises(ValueError, match="equal length"):
        roc_curve(np.array([0.1, 0.2]), np.array([1]))


def test_auc_by_hand():
    # Genuine 6 and 5 beat all three impostors, genuine 3 beats impostors 1 and 2: 8 of 9 pairs.
    assert roc_auc(S6, Y6) == pytest.approx(8 / 9)
    # Genuine 3 beats both impostors (2), genuine 2 beats impostor 1 and ties impostor 2 (1.5): 3.5 / 4.
    assert roc_auc(*TIED) == pytest.approx(0.875)
    assert roc_auc(*SEPARABLE) == 1.0
    assert roc_auc(*INVERTED) == 0.0
    assert roc_auc(np.zeros(4), np.array([1, 0, 1, 0])) == 0.5


def test_auc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=60).astype(float)  # many ties
    y = rng.integers(0, 2, size=60)
    g, i = s[y == 1], s[y == 0]
    want = (np.sum(g[:, None] > i[None, :]) + 0.5 * np.sum(g[:, None] == i[None, :])) / (g.size * i.size)
    assert roc_auc(s, y) == pytest.approx(want)


def test_eer_by_hand():
    # At threshold 4: FPR = 1/3 (impostor 4), FNR = 1/3 (genuine 3): a ROC point, no interpolation.
    assert eer(S6, Y6) == pytest.approx(1 / 3)
    # Between (fpr, fnr) = (0, 0.5) and (0.5, 0) across the tie: they meet half way, at 0.25.
    assert eer(*TIED) == pytest.approx(0.25)
    assert eer(*SEPARABLE) == 0.0
    assert eer(*INVERTED) == 1.0


def test_eer_interpolated_on_a_flat_segment():
    # Genuine 5, 2; impostors 4, 3, 1. FNR stays 0.5 while FPR goes 1/3 -> 2/3; they meet at 0.5.
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    y = np.array([1, 0, 0, 1, 0])
    assert eer(s, y) == pytest.approx(0.5)
    # Genuine 6, 4; impostors 5, 3, 2, 1. FPR stays 0.25 while FNR drops 0.5 -> 0: EER 0.25.
    s = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    y = np.array([1, 0, 1, 0, 0, 0])
    assert eer(s, y) == pytest.approx(0.25)


def test_tar_at_far_by_hand():
    # FAR 1/3 accepts down to score 3: all genuine.
    assert tar_at_far(S6, Y6, 1 / 3) == 1.0
    # Below 1/3 only FAR = 0 qualifies: genuine above every impostor are 6 and 5.
    assert tar_at_far(S6, Y6, 0.1) == pytest.approx(2 / 3)
    assert tar_at_far(S6, Y6, 1e-3) == pytest.approx(2 / 3)
    assert tar_at_far(S6, Y6, 0.0) == pytest.approx(2 / 3)
    assert tar_at_far(*SEPARABLE, 0.0) == 1.0
    assert tar_at_far(*INVERTED, 0.5) == 0.0
    assert tar_at_far(*INVERTED, 1.0) == 1.0
    # The tied genuine pair is only accepted with its impostor: TAR 0.5 at FAR 0, 1 at FAR 0.5.
    assert tar_at_far(*TIED, 0.49) == 0.5
    assert tar_at_far(*TIED, 0.5) == 1.0
    with pytest.raises(ValueError, match="far"):
        tar_at_far(S6, Y6, 1.5)


# ---------------------------------------------------------------------------- threshold, k-fold


def test_best_threshold_by_hand():
    assert best_threshold(*SEPARABLE) == 2.5
    # 2.5 and 4.5 both get 5 of 6 right; the lower one wins.
    assert best_threshold(S6, Y6) == 2.5
    # Tied scores 2 (one genuine, one impostor) cannot be split: 1.5 and 2.5 both get 3 of 4; lower wins.
    assert best_threshold(np.array([1.0, 2.0, 2.0, 3.0]), np.array([0, 1, 0, 1])) == 1.5


def test_best_threshold_at_the_ends():
    # Inverted: accepting all and rejecting all both get 2 of 4; the lower (accept all) wins.
    t = best_threshold(*INVERTED)
    assert t < 1.0 and t == np.nextafter(1.0, -np.inf)
    t = best_threshold(np.array([1.0, 2.0]), np.array([0, 0]))
    assert t > 2.0 and t == np.nextafter(2.0, np.inf)


def test_kfold_accuracy_by_hand():
    folds = np.array([1, 1, 2, 2, 3, 3])
    out = kfold_accuracy(S6, Y6, folds)
    # Fold 1 tested at the best threshold of scores 3..6 (labels 1,0,1,1): accept-all (3 of 4) ties
    # with 4.5 and wins as lower, so it sits just below 3 and rejects impostors 1, 2: accuracy 1.
    # Fold 2 at 3.5 (from 1,2,5,6 separable): rejects genuine 3, accepts impostor 4: accuracy 0.
    # Fold 3 at 2.5 (from 1..4, labels 0,0,1,0; ties 4.5-above-all, lower wins): accepts 5, 6: accuracy 1.
    assert out["folds"] == [1, 2, 3]
    assert out["fold_accuracies"] == [1.0, 0.0, 1.0]
    assert out["thresholds"] == [np.nextafter(3.0, -np.inf), 3.5, 2.5]
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["accuracy_std"] == pytest.approx(np.sqrt(2 / 9))


def test_kfold_accuracy_any_fold_ids_in_id_order():
    # Same partition as above under ids 8, 6, 7 (e.g. a split that holds only some LFW folds).
    out = kfold_accuracy(S6, Y6, np.array([8, 8, 6, 6, 7, 7]))
    assert out["folds"] == [6, 7, 8]
    assert out["fold_accuracies"] == [0.0, 1.0, 1.0]
    two = kfold_accuracy(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1]), np.array([4, 4, 5, 5]))
    assert two["accuracy"] == 1.0 and two["accuracy_std"] == 0.0
    assert two["thresholds"] == [pytest.approx(0.5), pytest.approx(0.5)]


def test_kfold_needs_two_folds_and_one_id_per_pair():
    with pytest.raises(ValueError, match="two folds"):
        kfold_accuracy(S6, Y6, np.ones(6, dtype=int))
    with pytest.raises(ValueError, match="one id per pair"):
        kfold_accuracy(S6, Y6, np.ones(5, dtype=int))


def test_verification_metrics_keys_and_values():
    out = verification_metrics(S6, Y6, np.array([1, 1, 2, 2, 3, 3]))
    assert list(out) == [
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar@far=1e-1",
        "tar@far=1e-2",
        "tar@far=1e-3",
        "threshold_mean",
    ]
    assert all(type(v) is float for v in out.values())
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["auc"] == pytest.approx(8 / 9)
    assert out["eer"] == pytest.approx(1 / 3)
    assert out["tar@far=1e-1"] == pytest.approx(2 / 3)
    assert out["threshold_mean"] == pytest.approx(3.0)


def test_far_key():
    assert far_key("tar", 1e-3) == "tar@far=1e-3"
    assert far_key("dir", 0.01) == "dir@far=1e-2"
    assert far_key("tar", 0.1) == "tar@far=1e-1"
    assert far_key("tar", 0.015) == "tar@far=1.5e-2"


# ---------------------------------------------------------------------------- identification

GALLERY = np.array([10, 20, 30])
# Probe 10: true match on top. Probe 20: true match (0.4) below both wrong ones: rank 3.
# Probe 30: true match (0.7) tied with a wrong one: rank 2, ties pessimistic.
SIM = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.6], [0.7, 0.1, 0.7]])
PROBES = np.array([10, 20, 30])


def test_cmc_by_hand():
    assert cmc(SIM, PROBES, GALLERY, ranks=(1, 2, 3)) == pytest.approx({"rank1": 1 / 3, "rank2": 2 / 3, "rank3": 1.0})
    # Ranks past the gallery size are simply 1.
    assert cmc(SIM, PROBES, GALLERY)["rank10"] == 1.0


def test_cmc_best_of_several_gallery_images_and_string_labels():
    gallery = np.array(["ann", "ann", "bob"])
    sim = np.array(
        [
            [0.2, 0.8, 0.5],  # ann: second image 0.8 beats bob 0.5
            [0.6, 0.7, 0.65],
        ]
    )  # bob: 0.65, below ann's 0.7 only: rank 2
    assert cmc(sim, np.array(["ann", "bob"]), gallery, ranks=(1, 2)) == {"rank1": 0.5, "rank2": 1.0}


def test_cmc_zero_embedding_probe_ranks_last_on_ties():
    gallery = similarity_matrix(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert cmc(gallery, np.array([1]), np.array([1, 2]), ranks=(1, 2)) == {"rank1": 0.0, "rank2": 1.0}


def test_cmc_missing_identity_names_the_count():
    with pytest.raises(ValueError, match="2 of 3 probes"):
        cmc(SIM, np.array([10, 99, 98]), GALLERY)
    with pytest.raises(ValueError, match="positive integers"):
        cmc(SIM, PROBES, GALLERY, ranks=(0,))
    with pytest.raises(ValueError, match="shape"):
        cmc(SIM[:, :2], PROBES, GALLERY)


# Known probes against gallery [1, 2]: top scores 0.9 (right), 0.8 (right), 0.6 (wrong), 0.5 (right).
KNOWN = np.array([[0.9, 0.1], [0.3, 0.8], [0.2, 0.6], [0.1, 0.5]])
KNOWN_LABELS = np.array([1, 2, 1, 2])
GALLERY2 = np.array([1, 2])
# Unknown probes' top scores: 0.85, 0.55, 0.4, 0.3.
UNKNOWN = np.array([[0.85, 0.0], [0.1, 0.55], [0.4, 0.4], [0.3, 0.2]])


def test_dir_at_far_by_hand():
    # 1 of 4 unknowns may pass: t just above 0.55 -> known 0.9 and 0.8, both right: 2 / 4.
    assert dir_at_far(KNOWN, KNOWN_LABELS, GALLERY2, UNKNOWN, far=0.25) == 0.5
    # 2 of 4: t just above 0.4 -> 0.9, 0.8, 0.5 right (0.6 is wrong): 3 / 4.
    assert dir_at_far(KNOWN, KNOWN_LABELS, GALLERY2, UNKNOWN, far=0.5) == 0.75
    # None may pass (far < 1/4): t just above 0.85 -> only 0.9.
    assert dir_at_far(KNOWN, KNOWN_LABELS, GALLERY2, UNKNOWN, far=0.1) == 0.25
    assert dir_at_far(KNOWN, KNOWN_LABELS, GALLERY2, UNKNOWN, far=1.0) == 0.75


def test_dir_at_far_ties_with_unknowns():
    # An unknown scoring exactly 0.8 must be rejected at far=0, so the known 0.8 is rejected with it.
    unknown = np.array([[0.8, 0.0]])
    assert dir_at_far(KNOWN, KNOWN_LABELS, GALLERY2, unknown, far=0.0) == 0.25
    # Two unknowns tied at 0.5 with far allowing one: both must be rejected, t just above 0.5.
    unknown = np.array([[0.5, 0.0], [0.0, 0.5]])
    assert dir_at_far(KNOWN, KNOWN_LABELS, GALLERY2, unknown, far=0.5) == 0.5


def test_identification_metrics_keys():
    out = identification_metrics(KNOWN, KNOWN_LABELS, GALLERY2, UNKNOWN, fars=(0.25, 1e-2))
    assert out == {"rank1": 0.75, "rank5": 1.0, "rank10": 1.0, "dir@far=2.5e-1": 0.5, "dir@far=1e-2": 0.25}
    assert list(identification_metrics(KNOWN, KNOWN_LABELS, GALLERY2)) == ["rank1", "rank5", "rank10"]
    with pytest.raises(ValueError, match="sim_unknown"):
        identification_metrics(KNOWN, KNOWN_LABELS, GALLERY2, UNKNOWN[:, :1])


def test_merged_verification_metrics_keeps_thresholds_within_each_part():
    from aird.eval.metrics import kfold_accuracy, merged_verification_metrics

    rng = np.random.default_rng(0)
    labels = np.tile([1, 0], 40)
    folds_a, folds_b = np.repeat([1, 2], 40), np.repeat([3, 4], 40)
    a = labels * 0.5 + rng.normal(0, 0.3, 80)  # one model's score scale
    b = labels * 0.5 + 10 + rng.normal(0, 0.3, 80)  # another model, shifted: a pooled threshold would fail
    merged = merged_verification_metrics([(a, labels, folds_a), (b, labels, folds_b)])
    ka, kb = kfold_accuracy(a, labels, folds_a), kfold_accuracy(b, labels, folds_b)
    assert merged["accuracy"] == pytest.approx(np.mean(ka["fold_accuracies"] + kb["fold_accuracies"]))
    pooled = kfold_accuracy(np.r_[a, b], np.r_[labels, labels], np.r_[folds_a, folds_b])
    assert merged["accuracy"] > pooled["accuracy"]
