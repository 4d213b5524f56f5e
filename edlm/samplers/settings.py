"""The sampler settings: one default and one check each.

``AncestralSampler`` checks ``top_p`` (on construction) and ``steps`` (``set_timesteps``);
``ImportanceSampler`` checks ``k``, ``window`` and ``temperature``. Every sampling path goes through
them; ``edlm.pipeline.SampleSettings`` calls the same functions to fail before any model loads. A bad
value is a ``ValueError`` of one line that names the setting, the value given and what is allowed.
"""

from __future__ import annotations

from numbers import Real

__all__ = [
    "DEFAULT_K",
    "DEFAULT_WINDOW",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "MAX_STEPS",
    "MAX_SEED",
    "check_positive_int",
    "check_steps",
    "check_seed",
    "check_k",
    "check_window",
    "check_temperature",
    "check_top_p",
    "check_sampler_settings",
]

DEFAULT_K = 1  # proposals per importance-sampled step; 1 = MDLM (SPEC 2.5)
DEFAULT_WINDOW = (0.0, 1.0)  # (t_lo, t_hi): every step is importance-sampled
DEFAULT_TEMPERATURE = 1.0  # τ in w ∝ exp(−E/τ)
DEFAULT_TOP_P = 1.0  # nucleus filtering of x_θ off

# Every reverse step is a pass of the loop and (unless the cached sampler skips it) a network call; past T = L
# steps a step reveals under one token on average, and the cached sampler makes at most L distinct denoiser
# calls whatever T is. 100,000 is ~100x the longest context edlm trains (L = 1024) and still a run of minutes
# for a small model; a larger T is a typo (or an unbounded run), not a setting.
MAX_STEPS = 100_000
# torch.Generator.manual_seed takes a 64-bit seed; the signed range is what every seed setting (sampling, the
# sweep's grid and reference rows) accepts, so a seed means the same thing everywhere and never overflows.
MAX_SEED = 2**63 - 1


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> int:
    """``value`` if it is an integer > 0 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_steps(steps) -> int:
    """T, the reverse steps (per block): a positive integer, at most ``MAX_STEPS``."""
    check_positive_int("steps", steps)
    if steps > MAX_STEPS:
        raise ValueError(f"steps={steps}: each step is a network call; more than {MAX_STEPS} steps is refused — the "
                         "cached sampler makes at most L distinct calls anyway.")
    return steps


def check_seed(seed, name: str = "seed") -> int:
    """A seed of ``torch.Generator.manual_seed``: an integer in [0, 2**63 − 1] (``MAX_SEED``)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**63 - 1], got {seed!r}.")
    return seed


def check_k(k) -> int:
    """Proposals per importance-sampled step: a positive integer."""
    return check_positive_int("k", k)


def check_window(window) -> tuple[float, float]:
    """``(t_lo, t_hi)`` with 0 <= t_lo <= t_hi <= 1, as two floats."""
    try:
        t_lo, t_hi = (float(w) for w in window)
    except (TypeError, ValueError):
        t_lo = t_hi = float("nan")  # not two numbers: refused below
    if not 0.0 <= t_lo <= t_hi <= 1.0:
        shown = tuple(window) if isinstance(window, (list, tuple)) else window
        raise ValueError(f"window must be (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1, got {shown!r}.")
    return t_lo, t_hi


def check_temperature(temperature) -> float:
    """τ > 0."""
    if not (_is_real(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    return float(temperature)


def check_top_p(top_p) -> float:
    """The nucleus mass, in (0, 1]; 1 = no filtering."""
    if not (_is_real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}.")
    return float(top_p)


def check_sampler_settings(*, steps, k=DEFAULT_K, window=DEFAULT_WINDOW, temperature=DEFAULT_TEMPERATURE,
                           top_p=DEFAULT_TOP_P) -> tuple[int, int, tuple[float, float], float, float]:
    """Every setting the samplers check, in one call: ``(steps, k, window, temperature, top_p)``."""
    return check_steps(steps), check_k(k), check_window(window), check_temperature(temperature), check_top_p(top_p)
