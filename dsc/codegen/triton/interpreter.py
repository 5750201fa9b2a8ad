"""Triton's interpreter on a machine without CUDA, whatever was imported first.

Triton picks interpreted or compiled at decoration time: `@triton.jit` returns an
InterpretedFunction when TRITON_INTERPRET=1, a JITFunction otherwise. Its own helpers
(tl.sigmoid, tl.max, tl.cdiv, ... in triton.language.standard and friends) are
decorated when triton is first imported. A process that imported triton before dsc
(transformers' DeepSeek modules do, and so does torch in places) therefore holds
compiled-mode helpers, and an interpreted kernel calling one fails with "Cannot call
@triton.jit'd outside of the scope of a kernel".

Without CUDA no compiled kernel can launch in this process anyway, so switching the
whole process over is safe: set the variable (read lazily by triton.knobs) and re-wrap
every JITFunction already living in triton.language's modules as the InterpretedFunction
the decorator would have returned.
"""

from __future__ import annotations

import os
import sys


def use_interpreter() -> None:
    """Run Triton kernels on the CPU from now on, in this process."""
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton" in sys.modules:
        _interpret_loaded_helpers()
    _index_scalars_portably()


def _index_scalars_portably() -> None:
    """Loop bounds that are kernel scalars (arguments, loaded values) work under every
    interpreter. The interpreter holds a scalar as a 1-element numpy array; Triton 3.6
    turns it into a Python int for `range` with int(array), which numpy 2.4 refuses
    ("only 0-dimensional arrays can be converted to Python scalars", triton#9171).
    Triton 3.9 squeezes first: do the same on older versions. Nothing a kernel can
    write avoids it short of while loops, which GPUs do not pipeline."""
    try:
        import triton.runtime.interpreter as interp
    except ImportError:  # no triton: nothing to run
        return

    patch = getattr(interp, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "squeezes_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.squeezes_index = True
    interp._patch_lang_tensor = patch_lang_tensor


def _interpret_loaded_helpers() -> None:
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name, module in list(sys.modules.items()):
        if not name.startswith("triton.language") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, JITFunction):
                # the interpreter ignores the decorator's options (noinline, debug, ...)
                setattr(module, attr, InterpretedFunction(value.fn))
