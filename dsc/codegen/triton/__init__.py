"""IR kernel groups -> Triton source, cached, loaded and launched.

On a machine without CUDA, Triton kernels run under Triton's interpreter; importing
this package switches it on, whether or not triton was imported before
(dsc.codegen.triton.interpreter says how).
"""

import torch as _torch

if not _torch.cuda.is_available():
    from dsc.codegen.triton.interpreter import use_interpreter as _use_interpreter

    _use_interpreter()
