"""dsc inside other frameworks: `dsc.integrations.hf.patch` for transformers' DeepSeek
models (torch custom ops live in dsc.ops; torch.compile works on dsc.nn directly)."""
