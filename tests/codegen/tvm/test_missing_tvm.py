"""The tvm backend where TVM is not installed: a clear error naming the install. Its
kernels' numerics sit beside the Triton ones, one test per kernel group for both
backends (tests/codegen/test_*_kernels.py, test_latent_append.py)."""

import pytest


def test_the_tvm_backend_without_tvm_is_a_clear_error(monkeypatch):
    import builtins

    from dsc.config import Config
    from dsc.errors import DscError
    from dsc.nn import MoE

    real = builtins.__import__

    def no_tvm(name, *args, **kwargs):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError("No module named 'tvm'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tvm)
    with pytest.raises(DscError, match=r"backend 'tvm' needs Apache TVM: pip install 'dsc-compiler\[tvm\]'"):
        MoE(Config.preset("tiny-v3"), backend="tvm")
