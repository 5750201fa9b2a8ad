"""IR kernel groups -> Triton source, cached, loaded and launched (issue 4, in progress:
the latent-cache write group so far).

On a machine without CUDA, Triton kernels run under Triton's interpreter, which must
be switched on before triton is first imported: importing this package does that.
"""

import sys as _sys

import torch as _torch

if not _torch.cuda.is_available() and "triton" not in _sys.modules:
    from dsc.codegen.triton.build import use_interpreter as _use_interpreter

    _use_interpreter()
