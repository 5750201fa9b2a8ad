"""dsc.nn.MoE: the DeepSeekMoE layer (router, routed experts, shared experts)."""

from __future__ import annotations

import torch

from dsc.config import Config
from dsc.nn.checkpoint import moe_params_from_checkpoint
from dsc.nn import layer_op
from dsc.nn.graph_module import GraphModule


class MoE(GraphModule):
    """One DeepSeekMoE layer (`mlp` of a checkpoint's MoE layer).

    Weights (load_state_dict): gate.weight, gate.e_score_correction_bias (noaux_tc),
    routed experts as experts.{i}.gate_proj / up_proj / down_proj.weight (DeepSeek
    checkpoints) or experts.gate_up_proj / experts.down_proj (transformers 5), and
    shared_experts.gate_proj / up_proj / down_proj.weight. `state_dict()` gives the
    stacked experts.gate_proj / up_proj / down_proj [E, ...], which loads back too.

    `moe(x)` takes x [..., hidden] and returns the same shape. passes and target: as
    for dsc.nn.MLA.
    """

    def __init__(self, cfg: Config, backend: str = "reference", passes="default", dtype=torch.float32,
                 device="cpu", target: str | None = None):
        super().__init__(cfg, "moe", backend, passes, dtype, device, target)

    def _from_checkpoint(self, sd):
        return moe_params_from_checkpoint(self.cfg, sd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_activation(x, "x", None, self.cfg.hidden_size)
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] == 0:
            return x.clone()
        self._check_loaded()
        call = layer_op.moe_layer if torch.compiler.is_compiling() else layer_op.run_moe  # see layer_op.py
        return call(flat, self._weight_list(), self._op_key).reshape(x.shape)
