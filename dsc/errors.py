"""dsc's exception types.

Every error dsc raises on bad input is a `DscError`, so a framework embedding dsc can
catch one type; the subclasses say which stage refused the input. The CLI turns any
`DscError` into one line on stderr and exit status 2.
"""

# `dsc` on the package index is another project (Dynamic Statistical Comparisons):
# dsc installs under this name, and its import package stays `dsc`.
DISTRIBUTION = "dsc-compiler"


def install_hint(extra: str) -> str:
    """The pip command that brings in one of dsc's optional extras."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class DscError(Exception):
    """Base of every error dsc raises for bad input or bad state."""


class ConfigError(DscError, ValueError):
    """A model config violates a rule (the message names the field and the rule)."""


class IRError(DscError):
    """A graph does not verify: a shape, dtype, operand or attribute is wrong."""


class ParseError(IRError):
    """IR text does not parse; the message names the line."""


class InputError(DscError, ValueError):
    """A module call got a tensor of the wrong shape, dtype or device."""


class WeightError(DscError, ValueError):
    """load_state_dict got missing, unexpected or mis-shaped weights."""


class CacheError(DscError, RuntimeError):
    """A latent cache cannot take the tokens asked of it (the cache is left unchanged)."""


class ArtifactError(DscError, ValueError):
    """Compiled kernels on disk are malformed or unsafe: a `dsc compile --backend tvm`
    directory whose manifest breaks its schema or names a file outside the directory, or
    a kernel cache entry without the file asked of it (the message names the entry and
    the rule)."""
