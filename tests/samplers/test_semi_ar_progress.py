"""Semi-AR generation shows one progress bar over all blocks × steps, labelled with the block it is in."""

import torch

from edlm import generate
from edlm.samplers.semi_ar import generate_semi_ar

V, MASK, L = 8, 8, 6


def uniform(x_t, t):
    return torch.zeros(*x_t.shape, V + 1)


class Counter:
    """A caller's bar: what generate() and generate_semi_ar() report to it."""

    def __init__(self):
        self.n = 0

    def update(self, n=1):
        self.n += n


def test_generate_advances_a_callers_bar_once_per_step():
    bar = Counter()
    generate(uniform, L, 2, V, MASK, 5, progress=bar, generator=torch.Generator().manual_seed(0))
    assert bar.n == 5
    bar = Counter()  # more steps than positions: the loop ends early, the bar still counts every step
    generate(uniform, L, 2, V, MASK, 40, progress=bar, generator=torch.Generator().manual_seed(0))
    assert bar.n == 40


def test_semi_ar_counts_all_blocks_on_one_bar():
    bar = Counter()
    generate_semi_ar(uniform, 15, L, 3, 2, V, MASK, 4, progress=bar, generator=torch.Generator().manual_seed(0))
    assert bar.n == 4 * 4  # blocks: 6 tokens, then 3 + 3 + 3 new ones


def test_semi_ar_bar_names_the_block(capsys, monkeypatch):
    import tqdm.auto

    bars = []

    class Eager(tqdm.auto.tqdm):  # redraw at every update, so that each block's label is printed
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "mininterval": 0, "miniters": 1})
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Eager)
    generate_semi_ar(uniform, 15, L, 3, 2, V, MASK, 4, progress=True, generator=torch.Generator().manual_seed(0))
    err = capsys.readouterr().err
    assert len(bars) == 1 and bars[0].total == 16 and bars[0].n == 16  # one bar, not one per block
    for block in range(1, 5):
        assert f"block {block}/4" in err, err


def test_semi_ar_without_progress_prints_nothing(capsys):
    generate_semi_ar(uniform, 15, L, 3, 2, V, MASK, 4, generator=torch.Generator().manual_seed(0))
    assert capsys.readouterr().err == ""
