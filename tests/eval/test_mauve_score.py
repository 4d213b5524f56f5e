"""MAUVE on judge-LM features (edlm.eval.mauve_score), with a tiny random GPT-2 as the feature model."""

import random

import numpy as np
import pytest

from edlm.eval.mauve_score import judge_features, mauve_score

pytest.importorskip("mauve")

# the tiny judge's word vocabulary (tests/eval/conftest.py)
WORDS = "the a cat dog sat on mat and ran far away big small red blue old new tree house river".split()


def _sentences(n, seed, words=WORDS, length=(6, 12)):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(*length))) for _ in range(n)]


def test_features_pool_the_last_or_every_token(tiny_judge):
    texts = ["the cat sat on the mat", "a dog"]
    last = judge_features(texts, tiny_judge, "last")
    mean = judge_features(texts, tiny_judge, "mean")
    assert last.shape == mean.shape == (2, 32) and last.dtype == np.float32
    # one text alone gives the same features as in a padded batch (padding is never read)
    np.testing.assert_allclose(judge_features(texts[1:], tiny_judge, "last"), last[1:], atol=1e-5)
    np.testing.assert_allclose(judge_features(texts[1:], tiny_judge, "mean"), mean[1:], atol=1e-5)
    assert not np.allclose(last, mean)
    with pytest.raises(ValueError, match="pooling"):
        judge_features(texts, tiny_judge, "max")


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_same_texts_score_near_one_and_different_texts_lower(tiny_judge, pooling):
    p = _sentences(80, seed=0)
    same = mauve_score(p, list(p), tiny_judge, pooling=pooling)
    other = mauve_score(p, _sentences(80, seed=1, words=WORDS[:3], length=(2, 4)), tiny_judge, pooling=pooling)
    print(f"{pooling}: MAUVE same {same.mauve:.3f}, different {other.mauve:.3f}")
    assert same.mauve > 0.95
    assert other.mauve < 0.5 * same.mauve
    assert same.num_p == same.num_q == 80 and "MAUVE" in str(same)
