"""PromptEHR: synthetic electronic health records from demographic prompts.

The notebook API is this package's top level; the rest lives under it: promptehr.model (data, training,
generation, evaluation), promptehr.cli, and, with the `[service]` extra, promptehr.service and
promptehr.worker. Names are resolved on first use, so `import promptehr.service` never loads torch.
"""
from importlib import import_module

# public name -> module that defines it
_EXPORTS = {
    "Synthesizer": "promptehr.synthesizer",
    "Report": "promptehr.report",
    "Patient": "promptehr.model.patient",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import version

        return version("promptehr")
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'promptehr' has no attribute {name!r}")


def __dir__():
    return __all__
