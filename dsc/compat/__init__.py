"""The peers' entry points with their own signatures, defaults, layouts and return
conventions, on dsc's generated kernels: a framework swaps an import and nothing else.

- dsc.compat.flash_mla: FlashMLA's get_mla_metadata and flash_mla_with_kvcache.
- dsc.compat.vllm: vLLM's fused_experts, fused_topk and grouped_topk.

A peer feature dsc cannot serve raises dsc.InputError naming it, never a silent difference.
"""
