"""`dsc run --artifacts DIR` on a machine without a GPU: everything up to NVRTC. The
manifest is checked whole against its schema, every file it names is kept inside the
directory, and whatever a damaged or forged directory holds gives an ArtifactError
naming the entry and the rule, never another exception. (That `dsc compile --backend
tvm`'s real output passes: tests/codegen/tvm/test_cuda.py.)"""

import copy
import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsc.errors import ArtifactError, DscError, InputError
from dsc.runtime.nvrtc import Artifacts, bind_dims, evaluate, launches

NT, ROWS = "define_nt('float32', 64)", "define_rows[969546b9de9c6242]"


def _kernel(name, params, grid):
    return {"name": name, "params": params, "grid": [grid, "1", "1"], "block": ["128", "1", "1"]}


# two definitions as `dsc compile tiny-v3 --backend tvm --target sm90 --dtype float32` writes them
MANIFEST = {
    "model": "tiny-v3", "backend": "tvm", "target": "sm90", "archs": [90], "dtype": "float32", "passes": "default",
    "definitions": {
        NT: {"symbol": "bmm_nt_float32_k64_l16_t0_5d7a54b4",
             "buffers": [{"name": "A", "dtype": "float32", "shape": ["Bt", "M", "64"], "scratch": False},
                         {"name": "B", "dtype": "float32", "shape": ["Bt", "N", "64"], "scratch": False},
                         {"name": "C", "dtype": "float32", "shape": ["Bt", "M", "N"], "scratch": False},
                         {"name": "acc", "dtype": "float32", "shape": ["Bt", "M", "N"], "scratch": True}],
             "vars": {"Bt": [0, 0], "M": [0, 1], "N": [1, 1]},
             "kernels": [_kernel("bmm_nt_float32_k64_l16_t0_5d7a54b4_kernel",
                                 [["ptr", 0], ["ptr", 1], ["ptr", 3], ["int", "Bt"], ["int", "M"], ["int", "N"]],
                                 "((((Bt * M) * N) + 127) // 128)"),
                         _kernel("bmm_nt_float32_k64_l16_t0_5d7a54b4_kernel_1",
                                 [["ptr", 2], ["ptr", 3], ["int", "Bt"], ["int", "M"], ["int", "N"]],
                                 "((((Bt * M) * N) + 127) // 128)")],
             "files": {"90": "bmm_nt_float32_k64_l16_t0_5d7a54b4.sm90.cu"}},
        ROWS: {"symbol": "row_rms_norm_d2d80e58",
               "buffers": [{"name": "in0", "dtype": "float32", "shape": ["B", "T", "24"], "scratch": False},
                           {"name": "in1", "dtype": "float32", "shape": ["24"], "scratch": False},
                           {"name": "out", "dtype": "float32", "shape": ["B", "T", "24"], "scratch": False},
                           {"name": "ss0", "dtype": "float32", "shape": ["B", "T"], "scratch": True}],
               "vars": {"B": [0, 0], "T": [0, 1]},
               "kernels": [_kernel("row_rms_norm_d2d80e58_kernel", [["ptr", 0], ["ptr", 3], ["int", "B"], ["int", "T"]],
                                   "(((B * T) + 127) // 128)"),
                           _kernel("row_rms_norm_d2d80e58_kernel_1",
                                   [["ptr", 0], ["ptr", 1], ["ptr", 2], ["ptr", 3], ["int", "B"], ["int", "T"]],
                                   "((((B * T) * 3) + 15) // 16)")],
               "files": {"90": "row_rms_norm_d2d80e58.sm90.cu"}}},
    "groups": [{"layer": "mla", "group": "gemm", "fuses": ["linear"], "definitions": [NT]},
               {"layer": "mla", "group": "rowwise", "fuses": ["rms_norm"], "definitions": [ROWS]}],
}
SOURCE = 'extern "C" __global__ void k() {}\n'


@pytest.fixture
def arts(tmp_path):
    """An artifacts directory (manifest and sources) beside a file outside it."""
    root = tmp_path / "arts"
    root.mkdir()
    for d in MANIFEST["definitions"].values():
        (root / d["files"]["90"]).write_text(SOURCE)
    (tmp_path / "outside.cu").write_text("SECRET")
    write(root, MANIFEST)
    return root


def write(root, manifest) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest))


def refused(root, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        arts = Artifacts(str(root), 90)
        for key in arts.manifest["definitions"]:
            arts.kernel(key)


def args_for(entry: dict, env: dict) -> list[torch.Tensor]:
    return [torch.zeros([evaluate(d, env) for d in b["shape"]], dtype=torch.float32)
            for b in entry["buffers"] if not b["scratch"]]


def test_a_valid_directory_loads_and_launches_are_planned_on_cpu(arts):
    loaded = Artifacts(str(arts), 100)  # a newer card runs the newest arch at or below its own
    assert loaded.arch == 90
    kernels = loaded.kernel(ROWS)
    assert kernels.source == SOURCE and loaded.kernel(ROWS) is kernels
    args = args_for(kernels.entry, {"B": 2, "T": 3})
    env = bind_dims(kernels.entry, args)
    plan, buffers = launches(kernels.entry, args, env)
    assert env == {"B": 2, "T": 3} and list(buffers[-1].shape) == [2, 3]
    assert [grid for _, grid, _, _ in plan] == [[1, 1, 1], [2, 1, 1]]


def _set(path, value):
    def mutate(m):
        *head, last = path
        for p in head:
            m = m[p]
        m[last] = value
    return mutate


def _delete(*path):
    def mutate(m):
        *head, last = path
        for p in head:
            m = m[p]
        del m[last]
    return mutate


NT_BUF = ("definitions", NT, "buffers")
NT_K0 = ("definitions", NT, "kernels", 0)
CASES = {  # a manifest damaged one way -> what the error must say
    "no archs": (_delete("archs"), r"archs: is missing"),
    "archs a number": (_set(("archs",), 90), r"archs: must be a list, got a number 90"),
    "archs empty": (_set(("archs",), []), r"archs: must hold 1 to 64 items, got 0"),
    "arch a string": (_set(("archs", 0), "90"), r"archs\[0\]: must be an integer, got a string '90'"),
    "arch a boolean": (_set(("archs", 0), True), r"archs\[0\]: must be an integer, got a boolean"),
    "arch nested": (_set(("archs", 0), [90]), r"archs\[0\]: must be an integer, got a list"),
    "arch huge": (_set(("archs", 0), 10 ** 40), r"archs\[0\]: must be in \[1, 9999\]"),
    "arch infinite": (_set(("archs", 0), float("inf")), r"archs\[0\]: must be an integer, got a number inf"),
    "unknown field": (_set(("extra",), {}), r"extra: is not a manifest field"),
    "definitions a list": (_set(("definitions",), []), r"definitions: must be an object, got a list"),
    "definition a string": (_set(("definitions", NT), "x"),
                            r"definitions\[\"define_nt\('float32', 64\)\"\]: must be an object"),
    "no symbol": (_delete("definitions", NT, "symbol"), r"\.symbol: is missing"),
    "symbol a path": (_set(("definitions", NT, "symbol"), "../x"), r"\.symbol: must match"),
    "no buffers": (_set(NT_BUF, []), r"\.buffers: must hold 1 to 4096 items, got 0"),
    "dtype unknown": (_set(NT_BUF + (0, "dtype"), "float64"), r"buffers\[0\]\.dtype: must be one of float32, "),
    "shape not a list": (_set(NT_BUF + (0, "shape"), "Bt"), r"buffers\[0\]\.shape: must be a list, got a string"),
    "shape too deep": (_set(NT_BUF + (0, "shape"), [[["Bt"]]]), r"shape\[0\]: must be a string, got a list"),
    "dim a number": (_set(NT_BUF + (0, "shape", 2), 64), r"shape\[2\]: must be a string, got a number 64"),
    "dim executes": (_set(NT_BUF + (0, "shape", 2), "__import__('os')"),
                     r"buffers\[0\]\.shape\[2\]: .*unsupported syntax"),
    "dim a power": (_set(NT_BUF + (0, "shape", 2), "Bt ** 2"), r"unsupported syntax"),
    "dim cut short": (_set(NT_BUF + (0, "shape", 2), "Bt +"), r"not an integer expression \(SyntaxError\)"),
    "dim negative": (_set(NT_BUF + (0, "shape", 2), "-4"), r"buffers\[0\]\.shape\[2\]: '-4' is -4, outside \[0, "),
    "dim unbound": (_set(NT_BUF + (2, "shape", 2), "Q"),
                    r"buffers\[2\]\.shape\[2\]: 'Q' reads Q, which is not among the vars"),
    "dim too long": (_set(NT_BUF + (0, "shape", 2), "1+" * 600 + "1"), r"at most 1000 characters"),
    "dim nested deep": (_set(NT_BUF + (0, "shape", 2), "(" * 300 + "1" + ")" * 300), r"not an integer expression"),
    "scratch a string": (_set(NT_BUF + (3, "scratch"), "true"), r"buffers\[3\]\.scratch: must be true or false"),
    "scratch first": (_set(NT_BUF + (0, "scratch"), True), r"buffers: must list the arguments"),
    "var pair short": (_set(("definitions", NT, "vars", "M"), [0]), r"vars\.M: must hold 2 to 2 items"),
    "var negative": (_set(("definitions", NT, "vars", "M", 0), -1), r"vars\.M\[0\]: must be in \[0, 4096\]"),
    "var out of range": (_set(("definitions", NT, "vars", "M"), [9, 0]), r"vars.M: \[9, 0\] must point at the dim"),
    "var wrong dim": (_set(("definitions", NT, "vars", "M"), [0, 2]), r"vars.M: \[0, 2\] must point at the dim M"),
    "var a scratch": (_set(("definitions", NT, "vars", "M"), [3, 1]), r"vars.M: \[3, 1\] must point"),
    "no kernels": (_set(("definitions", NT, "kernels"), []), r"\.kernels: must hold 1 to"),
    "no grid": (_delete(*NT_K0, "grid"), r"kernels\[0\]\.grid: is missing"),
    "grid of two": (_set(NT_K0 + ("grid",), ["1", "1"]), r"kernels\[0\]\.grid: must hold 3 to 3 items"),
    "grid negative": (_set(NT_K0 + ("grid", 0), "-1"),
                      r"kernels\[0\]\.grid\[0\]: '-1' is -1, outside \[0, 2147483647\]"),
    "grid too big": (_set(NT_K0 + ("grid", 1), "65536"), r"grid\[1\]: '65536' is 65536, outside \[0, 65535\]"),
    "block zero": (_set(NT_K0 + ("block", 0), "0"), r"block\[0\]: '0' is 0, outside \[1, 1024\]"),
    "param kind": (_set(NT_K0 + ("params", 0), ["float", 1]),
                   r"kernels\[0\]\.params\[0\]: must be \['ptr' \| 'int', value\]"),
    "param flat": (_set(NT_K0 + ("params", 0), "ptr"), r"params\[0\]: must be \['ptr'"),
    "param index a string": (_set(NT_K0 + ("params", 0), ["ptr", "0"]), r"params\[0\]\[1\]: must be an integer"),
    "param no buffer": (_set(NT_K0 + ("params", 0), ["ptr", 9]), r"params\[0\]: ptr 9 names no buffer"),
    "param no dim": (_set(NT_K0 + ("params", 3), ["int", "Z"]), r"params\[3\]: int Z names no dim"),
    "kernel twice": (_set(("definitions", NT, "kernels", 1, "name"), "bmm_nt_float32_k64_l16_t0_5d7a54b4_kernel"),
                     r"kernels\[1\].name: .* is listed twice"),
    "no files": (_delete("definitions", NT, "files"), r"\.files: is missing"),
    "files empty": (_set(("definitions", NT, "files"), {}), r"files: must hold a source for each of archs \['90'\]"),
    "files other arch": (_set(("definitions", NT, "files"), {"80": "x.cu"}), r"got \['80'\]"),
    "file a number": (_set(("definitions", NT, "files", "90"), 5), r"files\['90'\]: must be a string"),
    "group unknown": (_set(("groups", 0, "definitions"), ["define_nope()"]), r"groups\[0\].definitions: .* is not"),
    "groups an object": (_set(("groups",), {}), r"groups: must be a list"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_manifest_is_refused_naming_the_entry_and_the_rule(arts, case):
    mutate, match = CASES[case]
    manifest = copy.deepcopy(MANIFEST)
    mutate(manifest)
    write(arts, manifest)
    refused(arts, r"--artifacts .*: manifest.json .*" + match)


@pytest.mark.parametrize("text, match", [
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe\x00\x01binary\x00", "is not valid JSON .*UnicodeDecodeError"),
    (b"", "is not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "is not valid JSON"),
    (b'{"backend": "tvm", "archs": [' + b"9" * 5000 + b"]}", "is not valid JSON"),
    (b"[1, 2]", "must hold an object, got a list"),
    (b"null", "must hold an object, got null"),
    (b'{"archs": [90]}', "the manifest is for backend None, not tvm"),
    (b'{"backend": ["tvm"]}', r"the manifest is for backend \['tvm'\], not tvm"),
])
def test_a_manifest_that_is_not_a_json_object_is_refused(arts, text, match):
    (arts / "manifest.json").write_bytes(text)
    refused(arts, match)


def test_files_are_confined_to_the_directory(arts, tmp_path):
    (arts / "inner.cu").write_text(SOURCE)
    (arts / "sub").mkdir()
    os.symlink(tmp_path / "outside.cu", arts / "escape.cu")
    os.symlink("inner.cu", arts / "alias.cu")
    cases = {
        "../outside.cu": "resolves outside the artifacts directory",
        "../../../../../../etc/passwd": "resolves outside the artifacts directory",
        "sub/../../outside.cu": "resolves outside the artifacts directory",
        "escape.cu": "resolves outside the artifacts directory",  # a symlink out
        str(tmp_path / "outside.cu"): "is an absolute path",
        "/etc/passwd": "is an absolute path",
        "sub": "is not a file in the artifacts directory",
        "missing.cu": "is not a file in the artifacts directory",
        "a\0b.cu": "is not a file name",
    }
    for name, match in cases.items():
        manifest = copy.deepcopy(MANIFEST)
        manifest["definitions"][NT]["files"]["90"] = name
        write(arts, manifest)
        refused(arts, r"definitions\[\"define_nt\('float32', 64\)\"\].files\['90'\]: .*" + match)
    manifest = copy.deepcopy(MANIFEST)
    manifest["definitions"][NT]["files"]["90"] = "alias.cu"  # a symlink that stays inside is a file like any other
    write(arts, manifest)
    assert Artifacts(str(arts), 90).kernel(NT).source == SOURCE


def test_a_manifest_symlinked_from_outside_is_refused(arts, tmp_path):
    (tmp_path / "elsewhere.json").write_text(json.dumps(MANIFEST))
    os.remove(arts / "manifest.json")
    os.symlink(tmp_path / "elsewhere.json", arts / "manifest.json")
    refused(arts, "manifest.json: 'manifest.json' resolves outside the artifacts directory")


def test_a_source_swapped_after_loading_is_still_confined(arts, tmp_path):
    loaded = Artifacts(str(arts), 90)
    path = arts / MANIFEST["definitions"][NT]["files"]["90"]
    os.remove(path)
    os.symlink(tmp_path / "outside.cu", path)
    with pytest.raises(ArtifactError, match="resolves outside the artifacts directory"):
        loaded.kernel(NT)
    (arts / MANIFEST["definitions"][ROWS]["files"]["90"]).write_bytes(b"\xff\xfe bad")
    with pytest.raises(ArtifactError, match=r"files\['90'\] is not UTF-8 text"):
        loaded.kernel(ROWS)


def test_launch_extents_are_checked_against_the_dims_they_are_given(arts):
    entry = copy.deepcopy(Artifacts(str(arts), 90).manifest["definitions"][ROWS])
    args = args_for(entry, {"B": 2, "T": 3})
    env = bind_dims(entry, args)
    for what, value, match in [
        (("buffers", 3, "shape", 1), "T - 10", r"scratch ss0.shape = T - 10 is -7 at \{'B': 2, 'T': 3\}, outside"),
        (("kernels", 0, "grid", 0), "B - 3", r"grid\[0\] = B - 3 is -1 .*outside \[0, 2147483647\]"),
        (("kernels", 0, "grid", 2), "B * 65536", r"grid\[2\] = B \* 65536 is 131072 .*outside \[0, 65535\]"),
        (("kernels", 0, "block", 0), "B // (T - 3)", r"B // \(T - 3\)': division by zero"),
        (("kernels", 0, "block", 1), "T * 8", r"block \[128, 24, 1\] has more than 1024 threads"),
        (("buffers", 3, "shape", 0), "999999999 * 999999999", r"cannot allocate scratch ss0"),
    ]:
        bad = copy.deepcopy(entry)
        _set(what, value)(bad)
        with pytest.raises(ArtifactError, match=match):
            launches(bad, args, env)
    with pytest.raises(InputError, match="takes 3 tensors, got 2"):
        bind_dims(entry, args[:2])
    with pytest.raises(InputError, match=r"argument in0 must be float32 \['B', 'T', '24'\], got float32 \[2, 72\]"):
        bind_dims(entry, [args[0].reshape(2, 72)] + args[1:])


# a fuzzer: random JSON grafted onto, deleted from or nested around any part of a good manifest
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() |
                    st.sampled_from(["", "B", "-1", "90", "tvm", "ptr", "int", "../outside.cu", "/etc/passwd",
                                     "B // 0", "define_nope()", NT]) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=6)


def _paths(node, path=()):
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, path + (k,))


@st.composite
def damaged(draw):
    manifest = copy.deepcopy(MANIFEST)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(manifest))))
        how = draw(st.sampled_from(["replace", "delete", "nest"]) if path else st.just("replace"))
        if not path:
            manifest = draw(JSON)
            continue
        parent = manifest
        for p in path[:-1]:
            parent = parent[p]
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = [parent[path[-1]]] if how == "nest" else draw(JSON)
        if not isinstance(manifest, dict):
            break
    return manifest


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=damaged())
def test_any_damaged_manifest_loads_or_is_refused_with_a_dsc_error(arts, manifest):
    (arts / "manifest.json").write_text(json.dumps(manifest, allow_nan=True))
    try:
        loaded = Artifacts(str(arts), 90)
        for key, entry in loaded.manifest["definitions"].items():
            loaded.kernel(key)
            args = args_for(entry, {name: 2 for name in entry["vars"]})
            launches(entry, args, bind_dims(entry, args))
    except DscError:
        pass
