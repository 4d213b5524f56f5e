"""edlm: energy-based diffusion language models (MDLM proposals, residual energies, importance sampling)."""

__version__ = "0.1.0"
__all__ = ["generate", "__version__"]


def __getattr__(name: str):
    # `generate` needs torch: import it on first use, so `edlm --help` (and `import edlm.cli`) stay light
    if name == "generate":
        from edlm.samplers.loop import generate

        globals()["generate"] = generate
        return generate
    raise AttributeError(f"module 'edlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "generate"])
