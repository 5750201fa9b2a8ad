"""dsc inside other frameworks: `dsc.integrations.hf.patch` for transformers' DeepSeek
models (torch custom ops live in dsc.ops; torch.compile works on dsc.nn directly)."""


def __getattr__(name):  # `dsc.integrations.hf` without an explicit import of the submodule
    if name == "hf":
        import dsc.integrations.hf as hf

        return hf
    raise AttributeError(f"module 'dsc.integrations' has no attribute {name!r}")
