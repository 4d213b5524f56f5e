"""Same seed, same tokens: the shipped models' samples on CPU, checked against tokens recorded in
``golden_tokens.json``. A change to the loop, the samplers, the draws or the networks that alters a single
token of any case fails here; a deliberate change of the random stream must re-record the file."""

import json
from pathlib import Path

import pytest

import edlm
from edlm.loading import load_denoiser_bundle, load_energy
from edlm.pipeline import sample

GOLDEN = json.loads((Path(__file__).parent / "golden_tokens.json").read_text())
ASSETS = Path(edlm.__file__).parent / "assets"

CASES = {
    # name: (model set, energy spec relative to the set or None, sampler settings)
    "mdlm_cache": ("wikipedia_en", None, dict(steps=8)),
    "mdlm_nocache": ("wikipedia_en", None, dict(steps=8, cache=False)),
    "mdlm_top_p": ("wikipedia_en", None, dict(steps=8, top_p=0.9)),
    "mdlm_no_noise_removal": ("wikipedia_en", None, dict(steps=4, noise_removal=False)),
    "edlm_ar_carry": ("wikipedia_en", "ar", dict(steps=4, k=4)),
    "edlm_ar_exact": ("wikipedia_en", "ar,carry_over=false", dict(steps=4, k=4, window=(0.5, 1.0))),
    "edlm_nce": ("wikipedia_en", "nce", dict(steps=4, k=3, temperature=2.0)),
    "mdlm_semi_ar": ("tiny-shakespeare", None, dict(steps=4, length=192, stride=64)),
    "edlm_ar_semi_ar": ("tiny-shakespeare", "ar", dict(steps=4, k=2, length=160, stride=32)),
}


@pytest.fixture(scope="module")
def bundles():
    return {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_tokens_as_recorded(name, bundles, one_thread):
    models, spec, settings = CASES[name]
    if models not in bundles:
        bundles[models] = load_denoiser_bundle(ASSETS / models / "mdlm")
    bundle = bundles[models]
    energy = None
    if spec is not None:
        kind, _, option = spec.partition(",")
        energy = load_energy(f"{kind}:{ASSETS / models / kind}" + (f",{option}" if option else ""), bundle)
    settings = dict(settings)
    length = settings.pop("length", None)
    records = sample(bundle, num_samples=3, batch_size=3, length=length, energy=energy, seed=7,
                     progress=False, **settings)
    assert [r.tokens for r in records] == GOLDEN[name]
