"""The compiled backends' kernels by the names the group kinds call them
(dsc/codegen/groups/), for tests that hold both to the same reference."""


def backend_kernels(backend: str):
    from dsc.codegen.backend import get_backend

    return get_backend(backend).kernels
