"""Text -> graph: the inverse of `dsc.ir.printer`. Every node is rebuilt through
`Node.make`, so parsed text is verified as it is read, and the printed type of each
line is checked against the type its op infers."""

from __future__ import annotations

import ast
import math
import re
from typing import Any

import sympy

from dsc.errors import IRError, ParseError
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.ir.types import TensorType, dtype, sym

_HEADER = re.compile(r"^graph\s+([\w.\-]+)\s*\((.*)\)\s*\{$")
_INPUT = re.compile(r"%([\w.]+)\s*:\s*(\w+)\[([^\]]*)\]")
_TYPED = re.compile(r"^(.*?)\s+:\s+(\w+)\[(.*)\]$")
_ASSIGN = re.compile(r"^%([\w.]+)\s*=\s*(.*)$")
_CALL = re.compile(r"^(\w+)\(([^)]*)\)\s*(?:\{(.*)\})?$")
_RETURN = re.compile(r"^return\s+(.*)$")
_FOLD = re.compile(r"^fold\s+([\w.]+)\s*=\s*%([\w.]+)$")


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(_value(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Name) \
            and node.operand.id == "inf":
        return -math.inf
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    # anything else is a symbolic dim expression such as B, 64*P or B*T
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    expr = sympy.sympify(ast.unparse(node), locals={n: sym(n) for n in names})
    return int(expr) if expr.is_Integer else expr


def _parse_expr(text: str) -> Any:
    return _value(ast.parse(text, mode="eval").body)


def _parse_type(dt: str, dims: str) -> TensorType:
    shape = _parse_expr(f"[{dims}]") if dims.strip() else ()
    return TensorType(shape, dtype(dt))


def _parse_attrs(text: str) -> dict:
    call = ast.parse(f"dict({text})", mode="eval").body
    if call.args:
        raise ValueError("attributes must be name=value pairs")
    return {kw.arg: _value(kw.value) for kw in call.keywords}


def parse_graph(text: str) -> Graph:
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ParseError("empty IR text")

    def fail(lineno: int, why: str) -> ParseError:
        return ParseError(f"line {lineno}: {why}")

    lineno, first = lines[0]
    m = _HEADER.match(first)
    if not m:
        raise fail(lineno, "expected 'graph NAME(%input: type, ...) {'")
    name = m.group(1)
    env: dict[str, Node] = {}
    inputs = []
    try:
        for im in _INPUT.finditer(m.group(2)):
            node = Node.make("input", (), name=im.group(1), **_type_attrs(_parse_type(im.group(2), im.group(3))))
            if im.group(1) in env:
                raise fail(lineno, f"input %{im.group(1)} declared twice")
            env[im.group(1)] = node
            inputs.append(node)
    except (IRError, SyntaxError, ValueError, TypeError, sympy.SympifyError) as e:
        if isinstance(e, ParseError):
            raise
        raise fail(lineno, f"bad input declaration: {e}") from None

    outputs = None
    folds: dict[str, Node] = {}
    for lineno, ln in lines[1:]:
        if outputs is not None:
            if ln != "}":
                raise fail(lineno, f"unexpected text after return: {ln!r}")
            try:
                return Graph(name, inputs, outputs, folds)
            except IRError as e:
                raise fail(lineno, str(e)) from None
        f = _FOLD.match(ln)
        if f:
            if f.group(2) not in env or f.group(1) in folds:
                raise fail(lineno, f"bad fold {ln!r}: %{f.group(2)} undefined or {f.group(1)} folded twice")
            folds[f.group(1)] = env[f.group(2)]
            continue
        r = _RETURN.match(ln)
        if r:
            outputs = {}
            for part in r.group(1).split(","):
                k, _, v = part.strip().partition("=")
                ref = v.strip().removeprefix("%")
                if not k or ref not in env:
                    raise fail(lineno, f"bad output {part.strip()!r}")
                outputs[k.strip()] = env[ref]
            continue
        a = _ASSIGN.match(ln)
        t = _TYPED.match(a.group(2)) if a else None
        if not a or not t:
            raise fail(lineno, f"expected '%name = op(...) : type', got {ln!r}")
        target, body = a.group(1), t.group(1).strip()
        if target in env:
            raise fail(lineno, f"%{target} is defined twice")
        try:
            ty = _parse_type(t.group(2), t.group(3))
            if body == "param":
                node = Node.make("param", (), name=target, **_type_attrs(ty))
            else:
                c = _CALL.match(body)
                if not c:
                    raise fail(lineno, f"expected 'op(%a, ...) {{attrs}}', got {body!r}")
                srcs = []
                for arg in filter(None, (s.strip() for s in c.group(2).split(","))):
                    ref = arg.removeprefix("%")
                    if not arg.startswith("%") or ref not in env:
                        raise fail(lineno, f"operand {arg} is not defined above")
                    srcs.append(env[ref])
                attrs = _parse_attrs(c.group(3)) if c.group(3) else {}
                node = Node.make(c.group(1), srcs, **attrs)
        except ParseError:
            raise
        except (IRError, SyntaxError, ValueError, TypeError, sympy.SympifyError) as e:
            raise fail(lineno, str(e)) from None
        if node.type != ty:
            raise fail(lineno, f"declared type {ty} but {node.op} infers {node.type}")
        env[target] = node
    raise ParseError("missing 'return ...' and closing '}'")


def _type_attrs(ty: TensorType) -> dict:
    return {"shape": ty.shape, "dtype": ty.dtype.name}
