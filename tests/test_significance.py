"""The paired bootstrap over users (mmseqrec.significance)."""

import numpy as np
import pytest

from mmseqrec.significance import differences_to_best, group_scores, load_ranks, paired_bootstrap, save_ranks


def test_a_constant_shift_has_a_point_interval_and_noise_does_not():
    rng = np.random.default_rng(0)
    b = rng.random(400)
    shifted = paired_bootstrap(b + 0.05, b, resamples=500)
    assert shifted.difference == pytest.approx(0.05) and shifted.low == pytest.approx(0.05) and shifted.high == pytest.approx(0.05)
    assert shifted.share_ahead == 1.0
    noise = paired_bootstrap(b, rng.permutation(b), resamples=2000)
    assert noise.low < 0 < noise.high and 0.2 < noise.share_ahead < 0.8
    # the interval holds the observed mean difference and narrows with more users
    small = paired_bootstrap(rng.random(50), rng.random(50), resamples=2000)
    large = paired_bootstrap(rng.random(5000), rng.random(5000), resamples=2000)
    assert small.low <= small.difference <= small.high
    assert (large.high - large.low) < (small.high - small.low) / 4


def test_same_seed_same_interval_and_bad_input_is_refused():
    a, b = np.arange(10.0), np.ones(10)
    assert paired_bootstrap(a, b, 300, seed=3) == paired_bootstrap(a, b, 300, seed=3)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_groups_from_saved_ranks(tmp_path):
    # ranks 1 -> NDCG 1, rank 3 -> 0.5, rank 100 -> 0
    for name, ranks in {"a1": [1, 3, 100], "a2": [1, 100, 100], "b1": [3, 3, 3]}.items():
        (tmp_path / name).mkdir()
        save_ranks(tmp_path / name, {"valid": np.array(ranks), "test": np.array(ranks)})
    assert load_ranks(tmp_path / "a1", "test").tolist() == [1, 3, 100]
    assert group_scores([tmp_path / "a1", tmp_path / "a2"]).tolist() == pytest.approx([1.0, 0.25, 0.0])
    out = differences_to_best({"a": [tmp_path / "a1", tmp_path / "a2"], "b": [tmp_path / "b1"]}, resamples=200)
    assert out["b"] is None  # b's mean 0.5 beats a's 0.4167
    assert out["a"].difference == pytest.approx((1.25 / 3) - 0.5)
    with pytest.raises(FileNotFoundError, match="ranks.npz is missing"):
        load_ranks(tmp_path, "test")
