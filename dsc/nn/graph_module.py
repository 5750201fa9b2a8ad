"""What dsc.nn.MLA and dsc.nn.MoE share: build the graph, run the passes, hold the
weights as nn.Parameters under checkpoint names, load them, execute on a backend."""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping, NamedTuple

import torch

from dsc.builders import PAGE_SIZE
from dsc.compiler import compile_layer
from dsc.config import Config
from dsc.errors import ConfigError, DscError, InputError, WeightError
from dsc.ir.graph import Graph
from dsc.ir.types import dtype as ir_dtype, to_torch
from dsc.ir.roofline import MACHINES
from dsc.nn.layer_op import register

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: cannot parse {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} asked for, but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: dsc runs on cpu or cuda, got {device!r}")
    return dev


def resolve_target(target: str | None, device: torch.device) -> str:
    """The machine passes compile for: given, or this CUDA device's (sm80 for Ampere,
    sm90 for Hopper and later), or sm90 on a CPU (the reference backend runs any)."""
    if target is None:
        if device.type == "cuda":
            major, _ = torch.cuda.get_device_capability(device)
            return "sm80" if major < 9 else "sm90"
        return "sm90"
    if target not in MACHINES:
        raise ConfigError(f"target: expected one of {', '.join(MACHINES)}, got {target!r}")
    return target


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise ConfigError(f"dtype: dsc modules run in {', '.join(map(str, SUPPORTED_DTYPES))}, got {dtype}")
    return dtype


class GraphModule(torch.nn.Module):
    def __init__(self, cfg: Config, layer: str, backend: str, passes, dtype, device, target: str | None = None,
                 page_size: int = PAGE_SIZE):
        super().__init__()
        if not isinstance(cfg, Config):
            raise ConfigError(f"cfg: expected a dsc.Config, got {type(cfg).__name__}")
        self.cfg = cfg
        self.dtype = resolve_dtype(dtype)
        self._device = resolve_device(device)
        self.backend = backend
        self.target = resolve_target(target, self._device)
        compiled = compile_layer(cfg, layer, passes=passes, target=self.target, backend=backend,
                                 dtype=ir_dtype(self.dtype), page_size=page_size)
        self.pass_manager = compiled.passes
        self.graph: Graph = compiled.graph
        self._runner = compiled.runner
        self._op_key = register(self)  # how the layer ops (dsc::mla_layer, dsc::moe_layer) find this module
        self._hooks: list[Callable] = []
        # Weights live on the meta device until loaded: building a module for a model
        # larger than this machine costs nothing, and running one unloaded is an error.
        self._shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._folded: list[str] = []  # params the graph derives at load time: non-persistent buffers
        for p in self.graph.checkpoint_params():
            shape = tuple(int(d) for d in p.shape)
            self._shapes[p.name] = (shape, to_torch(p.dtype))
            self._install(p.name, torch.nn.Parameter(torch.empty(shape, dtype=to_torch(p.dtype), device="meta"),
                                                     requires_grad=False))

    # -- weights ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights live (follows module.to(...) once they are loaded)."""
        return next((p.device for p in self.parameters() if not p.is_meta), self._device)

    def _install(self, name: str, value: torch.Tensor) -> None:
        """A checkpoint weight as a parameter, a folded one as a buffer left out of state_dict."""
        owner = self
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        if isinstance(value, torch.nn.Parameter):
            owner.register_parameter(leaf, value)
        else:
            owner.register_buffer(leaf, value, persistent=False)

    def _param(self, name: str) -> torch.Tensor:
        owner = self
        for part in name.split("."):
            owner = getattr(owner, part)
        return owner

    def weights(self) -> dict[str, torch.Tensor]:
        """Checkpoint weights and the folded params computed from them."""
        return {name: self._param(name) for name in self._weight_names()}

    @property
    def loaded(self) -> bool:
        return all(not self._param(name).is_meta for name in self._shapes)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights a call reads (checkpoint weights the passes folded away
        are not counted; the folded ones are)."""
        from dsc.ir.cost import weight_bytes

        return weight_bytes(self.graph)

    @property
    def checkpoint_bytes(self) -> int:
        return sum(torch.Size(s).numel() * torch.empty((), dtype=d).element_size() for s, d in self._shapes.values())

    def _from_checkpoint(self, sd: Mapping[str, torch.Tensor]) -> tuple[dict, list[str], list[str], set[str]]:
        """(params, missing, unexpected, accounted) from a checkpoint; see checkpoint.py."""
        return dict(sd), [], [], set()

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Load one layer's weights under HF checkpoint names (see the class docstring).

        strict (default): any missing, unexpected or mis-shaped weight raises WeightError
        listing them by name, and nothing is loaded. Weights are cast to the module's
        dtype (the noaux_tc correction bias stays float32) and moved to its device.
        """
        if not isinstance(state_dict, Mapping):
            raise WeightError(f"state_dict must be a mapping of name -> tensor, got {type(state_dict).__name__}")
        params, missing, unexpected, accounted = self._from_checkpoint(state_dict)
        for name, t in params.items():
            if not isinstance(t, torch.Tensor):
                raise WeightError(f"{name}: expected a tensor, got {type(t).__name__}")
        missing += [n for n in self._shapes if n not in params and n not in accounted]
        unexpected += [n for n in params if n not in self._shapes]
        misshaped = [f"{n} {list(params[n].shape)} (expected {list(s)})" for n, (s, _) in self._shapes.items()
                     if n in params and tuple(params[n].shape) != s]
        if misshaped:
            raise WeightError("mis-shaped weights: " + "; ".join(misshaped))
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing: " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected: " + ", ".join(unexpected))
            raise WeightError(f"load_state_dict ({type(self).__name__}): " + "; ".join(parts))
        # All or nothing: every new value (and the folds computed from them) is made before
        # the first is installed, so a refusal anywhere leaves the module exactly as it was.
        new = {name: self._converted(name, params[name], dt) for name, (_, dt) in self._shapes.items()
               if name in params}
        base = {name: new.get(name, self._param(name)) for name in self._shapes}
        folded = {}
        if self.graph.folds and all(not t.is_meta for t in base.values()):
            from dsc.ir.interpreter import evaluate_folds

            try:
                with torch.no_grad():
                    folded = {name: value.contiguous() for name, value in evaluate_folds(self.graph, base).items()}
            except DscError:
                raise
            except Exception as e:  # a torch op refusing these weights: name it, load nothing
                raise WeightError(f"load_state_dict ({type(self).__name__}): folding the weights failed "
                                  f"({type(e).__name__}: {e}); nothing was loaded") from None
        for name, value in new.items():
            self._install(name, torch.nn.Parameter(value, requires_grad=False))
        for name, value in folded.items():
            self._install(name, value)
        if folded:
            self._folded = [k for k, _ in self.graph.folds]
        return LoadResult(missing, unexpected)

    def _converted(self, name: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A checkpoint tensor as the module keeps it: its dtype, on its device, contiguous."""
        if value.is_meta:
            raise WeightError(f"{name}: a tensor on the meta device holds no values (load real weights, e.g. "
                              f"from_pretrained without low_cpu_mem_usage/device_map='meta'); nothing was loaded")
        try:
            return value.detach().to(device=self.device, dtype=dtype).contiguous()
        except (RuntimeError, TypeError, NotImplementedError) as e:
            raise WeightError(f"{name}: cannot be converted to {dtype} on {self.device} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); nothing was loaded") from None

    # -- execution ---------------------------------------------------------------------------
    def _check_activation(self, x, name: str, rank: int | None, width: int) -> None:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if rank is not None and x.dim() != rank:
            raise InputError(f"{name}: expected rank {rank} [batch, tokens, hidden], got shape {list(x.shape)}")
        if x.dim() < 1 or x.shape[-1] != width:
            raise InputError(f"{name}: expected last dim hidden_size={width}, got shape {list(x.shape)}")
        if x.dtype != self.dtype:
            raise InputError(f"{name}: expected dtype {self.dtype} (the module's), got {x.dtype}")
        if x.device.type != self.device.type:
            raise InputError(f"{name}: expected a tensor on {self.device}, got one on {x.device}")

    def _weight_list(self) -> list[torch.Tensor]:
        """The weights a call reads, in `_weight_names` order: the layer op's arguments."""
        return [self._param(name) for name in self._weight_names()]

    def _weight_names(self) -> list[str]:
        return [*self._shapes, *self._folded]

    def _check_loaded(self) -> None:
        unloaded = [n for n in self._shapes if self._param(n).is_meta]
        if unloaded:
            raise WeightError(f"{type(self).__name__} has no weights for {', '.join(unloaded)}: "
                              f"call load_state_dict first")

    def _execute(self, inputs: dict[str, torch.Tensor], weights: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the compiled graph (what the layer ops of layer_op.py call)."""
        named = dict(zip(self._weight_names(), weights))
        with torch.no_grad():
            if self._hooks:
                return self._runner(inputs, named, hook=self._hooks[-1])
            return self._runner(inputs, named)

    @contextlib.contextmanager
    def launch_hook(self, hook: Callable):
        """Inside the block, every kernel group's launch goes through
        hook(group, values, env, launch) -> launch()'s result: what the tuner and the
        per-group benchmarks use to find, time and replay launches (compiled backends)."""
        if self.backend == "reference":
            raise ConfigError("launch_hook: the reference backend launches no kernel groups")
        self._hooks.append(hook)
        try:
            yield self
        finally:
            self._hooks.remove(hook)

    def extra_repr(self) -> str:
        return f"{self.cfg.name}, backend={self.backend!r}, dtype={self.dtype}, device={self.device}"
