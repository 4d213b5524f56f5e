"""The sampler settings: one default and one check each.

``AncestralSampler`` checks ``top_p`` (on construction) and ``steps`` (``set_timesteps``);
``ImportanceSampler`` checks ``k``, ``window`` and ``temperature``; ``SMCSampler``, ``AdaptiveSampler`` and
``RemaskSampler`` check their own (``particles``, ``ess_threshold``; ``budget``, ``k_choices``; ``remask_eta``,
``remask_window``), and ``check_sampler_options`` refuses a setting that the chosen sampler would ignore. Every
sampling path goes through
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
    "SAMPLERS",
    "DEFAULT_SAMPLER",
    "DEFAULT_PARTICLES",
    "DEFAULT_ESS_THRESHOLD",
    "DEFAULT_BUDGET",
    "DEFAULT_K_CHOICES",
    "DEFAULT_REMASK_ETA",
    "DEFAULT_REMASK_WINDOW",
    "SAMPLER_DEFAULTS",
    "check_sampler",
    "check_particles",
    "check_ess_threshold",
    "check_budget",
    "check_k_choices",
    "check_remask_eta",
    "check_sampler_options",
]

DEFAULT_K = 1  # proposals per importance-sampled step; 1 = MDLM (SPEC 2.5)
DEFAULT_WINDOW = (0.0, 1.0)  # (t_lo, t_hi): every step is importance-sampled
DEFAULT_TEMPERATURE = 1.0  # τ in w ∝ exp(−E/τ)
DEFAULT_TOP_P = 1.0  # nucleus filtering of x_θ off

# the samplers `generate(sampler=...)` runs: the window of importance-sampled steps (SPEC 2.5), sequential Monte
# Carlo with persistent particles, importance sampling under a budget of energy evaluations, energy-guided remasking
SAMPLERS = ("importance", "smc", "adaptive", "remask")
DEFAULT_SAMPLER = "importance"  # SPEC 2.5 (k = 1: MDLM)
DEFAULT_PARTICLES = 16  # SMC particles per sequence: TV on the exact toy falls ~1/N; 16 costs 16 denoiser rows
DEFAULT_ESS_THRESHOLD = 0.5  # resample when ESS < 0.5 N: the usual adaptive-resampling rule
DEFAULT_BUDGET = 32  # energy evaluations per sequence: a fixed window of k = 4 over 8 importance-sampled steps
DEFAULT_K_CHOICES = (1, 2, 4, 8, 16)  # the k the adaptive sampler picks from at a step (1: no energy call)
DEFAULT_REMASK_ETA = 0.05  # ReMDM's cap: at most 5 % of the generated tokens re-masked per step
DEFAULT_REMASK_WINDOW = (0.05, 0.55)  # ReMDM-loop's t_off, t_on: remask in the middle of the run, never at its end

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


def check_sampler(sampler) -> str:
    """One of ``SAMPLERS``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}.")
    return sampler


def check_particles(particles) -> int:
    """SMC particles per sequence: a positive integer."""
    return check_positive_int("particles", particles)


def check_ess_threshold(threshold) -> float:
    """The fraction of N under which the SMC sampler resamples: in [0, 1] (0: never, 1: whenever ESS < N)."""
    if not (_is_real(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"ess_threshold must be in [0, 1], got {threshold!r}.")
    return float(threshold)


def check_budget(budget) -> int:
    """Energy evaluations per sequence for the adaptive sampler: a positive integer."""
    return check_positive_int("budget", budget)


def check_k_choices(k_choices) -> tuple[int, ...]:
    """The k the adaptive sampler chooses from: distinct positive integers, 1 included (a step without energy)."""
    try:
        ks = tuple(sorted(int(check_positive_int("k_choices", k)) for k in k_choices))
    except TypeError:
        ks = ()
    if not ks or ks[0] != 1 or len(set(ks)) != len(ks):
        raise ValueError(f"k_choices must be distinct positive integers including 1, got {k_choices!r}.")
    return ks


def check_remask_eta(eta) -> float:
    """ReMDM's cap η on the re-masked fraction per step: in [0, 1]."""
    if not (_is_real(eta) and 0.0 <= eta <= 1.0):
        raise ValueError(f"remask_eta must be in [0, 1], got {eta!r}.")
    return float(eta)


# the settings each sampler reads; the others must stay at their defaults (they would be ignored)
SAMPLER_DEFAULTS = {"k": DEFAULT_K, "window": DEFAULT_WINDOW, "particles": DEFAULT_PARTICLES,
                    "ess_threshold": DEFAULT_ESS_THRESHOLD, "budget": DEFAULT_BUDGET, "k_choices": DEFAULT_K_CHOICES,
                    "remask_eta": DEFAULT_REMASK_ETA, "remask_window": DEFAULT_REMASK_WINDOW}
_READS = {"importance": {"k", "window"}, "smc": {"particles", "ess_threshold"}, "adaptive": {"budget", "k_choices"},
          "remask": {"k", "window", "remask_eta", "remask_window"}}


def check_sampler_options(sampler, **given) -> dict:
    """Each setting checked, and one the chosen sampler does not read refused unless it has its default.

    ``given``: any of ``SAMPLER_DEFAULTS``' names. Returns them checked (windows and k_choices as tuples)."""
    sampler = check_sampler(sampler)
    checks = {"k": check_k, "window": check_window, "particles": check_particles,
              "ess_threshold": check_ess_threshold, "budget": check_budget, "k_choices": check_k_choices,
              "remask_eta": check_remask_eta,
              "remask_window": lambda w: _named_window("remask_window", w)}
    out = {name: checks[name](value) for name, value in given.items()}
    for name, value in out.items():
        if name not in _READS[sampler] and value != SAMPLER_DEFAULTS[name]:
            users = [s for s, reads in _READS.items() if name in reads]
            raise ValueError(f"{name} applies to sampler {' / '.join(users)}, not {sampler!r}; got {name}={value!r}.")
    return out


def _named_window(name: str, window) -> tuple[float, float]:
    try:
        return check_window(window)
    except ValueError as exc:
        raise ValueError(f"{name}{str(exc).removeprefix('window')}") from None


def check_sampler_settings(*, steps, k=DEFAULT_K, window=DEFAULT_WINDOW, temperature=DEFAULT_TEMPERATURE,
                           top_p=DEFAULT_TOP_P) -> tuple[int, int, tuple[float, float], float, float]:
    """Every setting the samplers check, in one call: ``(steps, k, window, temperature, top_p)``."""
    return check_steps(steps), check_k(k), check_window(window), check_temperature(temperature), check_top_p(top_p)


def check_graph(graph: bool, *, sampler: str, top_p: float) -> bool:
    """``graph=True`` (``edlm.samplers.graph_loop``) plans every reveal up front: the default sampler with no nucleus
    filtering: MDLM without an energy, EDLM importance sampling (SPEC 2.5) with one."""
    if not isinstance(graph, bool):
        raise ValueError(f"`graph` must be True or False, got {graph!r}.")
    if graph and (sampler != DEFAULT_SAMPLER or top_p != DEFAULT_TOP_P):
        raise ValueError(f"graph=True runs sampler='importance' with top_p=1.0 (MDLM, or EDLM with an energy), got "
                         f"sampler={sampler!r} and top_p={top_p!r}; those run in the eager loop (graph=False).")
    return graph
