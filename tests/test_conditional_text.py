"""edlm.conditional, the text front door of conditional generation, on the shipped models: templates, the layout of
prompts and templates over the context (exact ids), fixed tokens that survive every sampler and reach the energy,
end of text, semi-AR continuations, and one-line errors."""

import dataclasses
import warnings

import pytest
import torch

from edlm import conditional
from edlm.conditional import complete, document_separator, encode_condition, infill, parse_template
from edlm.demo import ASSETS
from edlm.loading import load_denoiser_bundle, load_energy

pytestmark = pytest.mark.usefixtures("one_thread")

WIKI, SHAKE = ASSETS / "wikipedia_en", ASSETS / "tiny-shakespeare"


@pytest.fixture(scope="module")
def wiki():
    return load_denoiser_bundle(WIKI / "mdlm")


@pytest.fixture(scope="module")
def shake():
    return load_denoiser_bundle(SHAKE / "mdlm")


@pytest.fixture(scope="module")
def energies(shake):
    return {"EDLM-AR": load_energy(f"ar:{SHAKE / 'ar'},carry_over=false", shake),
            "EDLM-NCE": load_energy(f"nce:{SHAKE / 'nce'}", shake)}


def _ids(bundle, text):
    return bundle.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _one_line(exc_info, fragment):
    text = str(exc_info.value)
    assert "\n" not in text and fragment in text, text


# ----------------------------------------------------------------------------- templates
@pytest.mark.parametrize("text, parts", [
    ("The river [MASK:20] the city.", ["The river ", 20, " the city."]),
    ("[MASK:3]ing[MASK:2]", [3, "ing", 2]),
    ("[MASK:1][MASK:007] end", [1, 7, " end"]),
    ("Prices [rose: 5 %] by [MASK:4].", ["Prices [rose: 5 %] by ", 4, "."]),  # lower case "[word:" is text
])
def test_parse_template(text, parts):
    assert parse_template(text) == parts


@pytest.mark.parametrize("text, fragment", [
    ("The river flows.", "has no [MASK:n] marker"),
    ("The river [MASK] the city.", "unknown marker '[MASK]'"),
    ("The river [MASK:0] the city.", "[MASK:0] in template"),
    ("The river [MASK:-3] the city.", "unknown marker '[MASK:-3]'"),
    ("The river [MASK:x] the city.", "unknown marker '[MASK:x]'"),
    ("The river [MAKS:3] the city.", "unknown marker '[MAKS:3]'"),
    ("The river [MASK: 3] the city.", "unknown marker '[MASK: 3]'"),
    ("The river [mask:3] the city.", "unknown marker '[mask:3]'"),
    ("[MASK:2] then [NOTE:3", "unknown marker '[NOTE:3'"),
])
def test_parse_template_errors_are_one_line(text, fragment):
    with pytest.raises(ValueError) as exc:
        parse_template(text)
    _one_line(exc, fragment)
    assert "[MASK:n]" in str(exc.value)


# ----------------------------------------------------------------------------- layout: exact ids
def test_bpe_prompt_starts_a_document(wiki):
    """wikipedia_en was packed as <|endoftext|> doc <|endoftext|>: a prompt opens with the separator (id 0)."""
    tok = wiki.tokenizer
    assert document_separator(wiki) == tok.bos_token_id == tok.eos_token_id == 0
    x_init, fixed = encode_condition(wiki, prompt="The river")
    assert x_init.shape == fixed.shape == (1, wiki.length) and x_init.dtype == torch.long
    assert x_init[0, :3].tolist() == [0, 432, 2897] == [0, *_ids(wiki, "The river")]
    assert (x_init[0, 3:] == wiki.mask_id).all() and fixed[0].tolist() == [True] * 3 + [False] * (wiki.length - 3)
    # byte-level BPE glues a space to the next word: a trailing space is left to the first generated token
    assert torch.equal(encode_condition(wiki, prompt="The river ")[0], x_init)
    assert _ids(wiki, "The river ") == [432, 2897, 222]  # ... which would otherwise end in a lone "Ġ"
    assert encode_condition(wiki, prompt="The river", bos=False)[0][0, :2].tolist() == [432, 2897]
    x_short, _ = encode_condition(wiki, prompt="The river", length=10)
    assert x_short.shape == (1, 10)


def test_bpe_template_pieces_are_tokenized_on_their_own(wiki):
    m = wiki.mask_id
    x_init, fixed = encode_condition(wiki, template="The river [MASK:3] the city.")
    assert _ids(wiki, " the city.") == [262, 1164, 15]  # the leading space kept: Ġthe Ġcity .
    assert x_init[0, :9].tolist() == [0, 432, 2897, m, m, m, 262, 1164, 15]
    assert (x_init[0, 9:] == m).all() and int(fixed.sum()) == 6
    x2, _ = encode_condition(wiki, template="[MASK:2]ing")  # no merge across a boundary: "ing" on its own
    assert x2[0, :4].tolist() == [0, m, m, *_ids(wiki, "ing")]


def test_char_model_of_one_stream_gets_no_separator(shake):
    """tinyshakespeare is one document: no separator; a char tokenizer keeps a trailing space as its own token."""
    assert document_separator(shake) is None
    x_init, fixed = encode_condition(shake, prompt="ROMEO: ")
    ids = _ids(shake, "ROMEO: ")
    assert len(ids) == 7 and x_init[0, :7].tolist() == ids and int(fixed.sum()) == 7
    sep = shake.tokenizer.bos_token_id
    assert encode_condition(shake, prompt="ROMEO: ", bos=True)[0][0, :8].tolist() == [sep, *ids]


@pytest.mark.parametrize("kw, fragment", [
    (dict(prompt="word " * 200), "the model's context is 128: no token is left to generate"),
    (dict(prompt=""), "tokenizes to nothing"),
    (dict(prompt=" "), "tokenizes to nothing"),  # only the space, which the first generated token would bring
    (dict(template="The river [MASK:200] the city."), "needs 206 tokens (200 generated, with the document "
                                                      "separator) but the model's context is 128"),
    (dict(template="The river flows."), "has no [MASK:n] marker"),
    (dict(template="The river [MASK] the city."), "unknown marker"),
    (dict(prompt="a", template="b [MASK:2]"), "either a prompt or a template"),
    (dict(), "either a prompt or a template"),
    (dict(prompt="The river", length=129), "length 129 exceeds the model's context of 128"),
])
def test_encode_errors_are_one_line(wiki, kw, fragment):
    with pytest.raises(ValueError) as exc:
        encode_condition(wiki, **kw)
    _one_line(exc, fragment)


def test_prompt_that_fills_the_context_exactly_is_refused(wiki):
    prompt = " the" * 127  # 127 tokens + the separator = 128 = L
    assert len(_ids(wiki, prompt)) == 127
    with pytest.raises(ValueError, match="is 128 tokens, with the document separator, but the model's context is 128"):
        encode_condition(wiki, prompt=prompt)
    assert int(encode_condition(wiki, prompt=" the" * 126)[1].sum()) == 127  # one token left: fine


def test_characters_the_tokenizer_lacks_are_refused(shake):
    with pytest.raises(ValueError, match="characters the tokenizer does not know"):
        encode_condition(shake, prompt="ROMEO: 1 é")


# ----------------------------------------------------------------------------- sampling
class _Recorder:
    """An energy that keeps every x_0 it scored; everything else is the wrapped energy's."""

    def __init__(self, energy):
        self.inner, self.x0 = energy, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x_0, *args):
        self.x0.append(x_0.clone())
        return self.inner(x_0, *args)


def _check_completions(bundle, outs, prompts, num_samples, new_tokens=None, eos=True):
    assert [(o.prompt_index, o.index) for o in outs] == [(i, j) for i in range(len(prompts))
                                                         for j in range(num_samples)]
    eos_id = bundle.tokenizer.eos_token_id
    for o in outs:
        prompt = prompts[o.prompt_index]
        x_init, fixed = encode_condition(bundle, prompt=prompt)
        p = int(fixed.sum())
        assert o.prompt == prompt and o.tokens[:p] == x_init[0, :p].tolist()  # the prompt, bit for bit
        assert bundle.mask_id not in o.tokens
        span = o.tokens[p:p + (new_tokens or bundle.length - p)]
        cut = span[:span.index(eos_id)] if eos and eos_id in span else span
        assert o.completion_tokens == cut and o.ended == (cut != span)
        assert o.completion == bundle.tokenizer.decode(cut, skip_special_tokens=True) == o.spans[0]
        assert o.text == bundle.tokenizer.decode(o.tokens[:p] + cut, skip_special_tokens=True)
        assert o.text.startswith(prompt.rstrip(" ")) and o.nfe_denoiser >= 1


PROMPTS = ["ROMEO:\n", "First Citizen:\nWe are accounted poor"]  # rows of different prompt lengths share batches


@pytest.mark.parametrize("method", ["MDLM", "EDLM-AR", "EDLM-NCE"])
def test_prompt_tokens_survive_and_reach_the_energy(shake, energies, method):
    energy = _Recorder(energies[method]) if method != "MDLM" else None
    extra = dict(k=3) if energy is not None else {}
    outs = complete(shake, PROMPTS, energy=energy, steps=4, num_samples=3, batch_size=4, seed=1, **extra)
    _check_completions(shake, outs, PROMPTS, 3)
    if energy is not None:  # the energy scored whole sequences with each row's prompt in place
        assert outs[0].nfe_energy > 0 and energy.x0
        firsts = [encode_condition(shake, prompt=p)[0][0] for p in PROMPTS]
        for x_0 in energy.x0:
            assert (x_0 != shake.mask_id).all()
            assert all(any(torch.equal(row[:len(f)][f != shake.mask_id], f[f != shake.mask_id]) for f in firsts)
                       for row in x_0)


def test_one_generate_call_per_batch_and_the_seed_decides(shake, monkeypatch):
    calls = []
    real = conditional.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["x_init"].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(conditional, "generate", counting)
    a = complete(shake, PROMPTS, steps=3, num_samples=3, batch_size=4, seed=5)
    assert calls == [(4, 128), (2, 128)]
    b = complete(shake, PROMPTS, steps=3, num_samples=3, batch_size=4, seed=5)
    c = complete(shake, PROMPTS, steps=3, num_samples=3, batch_size=4, seed=6)
    assert [o.tokens for o in a] == [o.tokens for o in b] != [o.tokens for o in c]


def test_max_new_tokens_within_the_context(shake):
    outs = complete(shake, PROMPTS, steps=3, num_samples=2, max_new_tokens=10, stop_at_eos=False)
    _check_completions(shake, outs, PROMPTS, 2, new_tokens=10, eos=False)
    assert all(len(o.completion_tokens) == 10 and len(o.tokens) == shake.length for o in outs)


@pytest.mark.parametrize("method", ["MDLM", "EDLM-AR"])
def test_semi_ar_continues_past_the_context(shake, energies, method):
    energy = energies.get(method)
    extra = dict(k=2) if energy is not None else {}
    outs = complete(shake, PROMPTS, energy=energy, steps=2, num_samples=2, max_new_tokens=200, stride=64,
                    stop_at_eos=False, **extra)
    longest = max(len(_ids(shake, p)) for p in PROMPTS)
    assert all(len(o.tokens) == longest + 200 and len(o.completion_tokens) == 200 for o in outs)
    _check_completions(shake, outs, PROMPTS, 2, new_tokens=200, eos=False)
    default = complete(shake, ["ROMEO:\n"], steps=2, max_new_tokens=150)  # stride L/2 by default
    assert len(default[0].tokens) == 7 + 150


def test_infill_keeps_the_template_and_fills_its_spans(shake, energies):
    templates = ["ROMEO:\nI [MASK:12] love,\n[MASK:5] night.", "JULIET:\n[MASK:20]"]
    outs = infill(shake, templates, energy=energies["EDLM-AR"], k=2, steps=4, num_samples=2, stop_at_eos=False)
    assert len(outs) == 4
    for o in outs:
        x_init, fixed = encode_condition(shake, template=o.prompt)
        assert torch.equal(torch.tensor(o.tokens)[fixed[0]], x_init[0][fixed[0]])
        pieces = parse_template(o.prompt)
        assert [len(s) for s in o.spans] == [p for p in pieces if isinstance(p, int)]  # one char per token here
        filled = iter(o.spans)
        assert o.text == "".join(p if isinstance(p, str) else next(filled) for p in pieces)
        assert o.completion == " ... ".join(o.spans)


def test_infill_warns_about_carry_over(shake):
    energy = load_energy(f"ar:{SHAKE / 'ar'}", shake)  # carry_over=True, the paper's default
    with pytest.warns(UserWarning, match="carry_over=True ignores the fixed text after a masked span"):
        infill(shake, ["ROMEO: [MASK:4] night"], energy=energy, k=2, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infill(shake, ["ROMEO: [MASK:4]"], energy=energy, k=2, steps=2)  # nothing fixed after the span


# ----------------------------------------------------------------------------- end of text
class _EndsAt(torch.nn.Module):
    """The denoiser, but the EOS logit is huge at position ``at`` and tiny everywhere else."""

    def __init__(self, inner, eos, at):
        super().__init__()
        self.inner, self.eos, self.at = inner, eos, at
        for name in ("length", "vocab_size", "mask_id", "time_conditioned"):
            setattr(self, name, getattr(inner, name))

    def forward(self, x_t, t):
        logits = self.inner(x_t, t).clone()
        logits[..., self.eos] = -1e4
        logits[:, self.at, self.eos] = 1e4
        return logits


@pytest.mark.parametrize("model", ["shake", "wiki"])
def test_a_completion_stops_at_the_end_of_text(model, request):
    bundle = request.getfixturevalue(model)
    eos = bundle.tokenizer.eos_token_id
    _, fixed = encode_condition(bundle, template="ROMEO:\n[MASK:20]")
    start = int(fixed.sum())  # the span follows the template's text (and, for wiki, the separator)
    forced = dataclasses.replace(bundle, denoiser=_EndsAt(bundle.denoiser, eos, start + 5))
    for fill, kw in ((infill, {}), (complete, dict(max_new_tokens=20))):
        source = "ROMEO:\n[MASK:20]" if fill is infill else "ROMEO:\n"
        (o,) = fill(forced, [source], steps=3, seed=2, **kw)
        assert o.tokens[start + 5] == eos and eos not in o.tokens[start:start + 5]
        assert o.ended and o.completion_tokens == o.tokens[start:start + 5]
        assert o.completion == bundle.tokenizer.decode(o.tokens[start:start + 5])
        assert o.text == bundle.tokenizer.decode(o.tokens[:start + 5], skip_special_tokens=True)
        (kept,) = fill(forced, [source], steps=3, seed=2, stop_at_eos=False, **kw)
        assert kept.tokens == o.tokens and not kept.ended and len(kept.completion_tokens) == 20


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("kw, fragment", [
    (dict(length=64), "length does not apply to prompts or templates"),
    (dict(stride=32), "stride 32 applies only where a prompt plus max_new_tokens exceeds"),
    (dict(max_new_tokens=200, stride=129), "must be at most 128"),
    (dict(k=4), "only apply with an energy"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
])
def test_bad_settings_are_one_line(shake, kw, fragment):
    with pytest.raises(ValueError) as exc:
        complete(shake, ["ROMEO:"], steps=2, **kw)
    _one_line(exc, fragment)


def test_no_prompts_or_templates_is_one_line(shake):
    for fill, what in ((complete, "prompt"), (infill, "template")):
        with pytest.raises(ValueError) as exc:
            fill(shake, [], steps=2)
        _one_line(exc, f"no {what}s given")
    assert len(complete(shake, "ROMEO:", steps=2)) == 1  # one string is a list of one
