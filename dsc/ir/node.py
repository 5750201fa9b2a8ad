"""The one node type of the IR: an op applied to source nodes with attributes.

Nodes are immutable and hash-consed (as in tinygrad's UOp): making a node that equals
an existing one returns the existing object. Structural equality is therefore identity,
common subexpressions are shared for free, and a parsed graph *is* the graph printed.
A node's type is inferred by its op's verifier when it is made, so an ill-typed node
cannot exist.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterator

from dsc.errors import IRError
from dsc.ir.types import TensorType

_INTERNED: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()


def _attr_key(value: Any) -> Any:
    # 1 == 1.0 == True in Python; the key keeps their types apart so an int attr and a
    # float attr of the same value never intern to one node.
    if isinstance(value, tuple):
        return ("tuple", tuple(_attr_key(v) for v in value))
    return (type(value).__name__, value)


class Node:
    __slots__ = ("op", "srcs", "attrs", "type", "__weakref__")

    op: str
    srcs: tuple["Node", ...]
    attrs: dict[str, Any]
    type: TensorType

    def __new__(cls, *a, **k):
        raise TypeError("make nodes with Node.make(op, srcs, **attrs)")

    @staticmethod
    def make(op: str, srcs: tuple["Node", ...] | list["Node"] = (), **attrs: Any) -> "Node":
        from dsc.ir.opdef import get_op

        opdef = get_op(op)
        srcs = tuple(srcs)
        for s in srcs:
            if not isinstance(s, Node):
                raise IRError(f"{op}: operands must be nodes, got {type(s).__name__}")
        attrs = opdef.check_attrs(attrs)
        key = (op, tuple(id(s) for s in srcs), tuple((k, _attr_key(v)) for k, v in sorted(attrs.items())))
        hit = _INTERNED.get(key)
        if hit is not None:
            return hit
        ty = opdef.verify(srcs, attrs)
        node = object.__new__(Node)
        object.__setattr__(node, "op", op)
        object.__setattr__(node, "srcs", srcs)
        object.__setattr__(node, "attrs", attrs)
        object.__setattr__(node, "type", ty)
        _INTERNED[key] = node
        return node

    def __setattr__(self, name, value):
        raise AttributeError("IR nodes are immutable")

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    @property
    def name(self) -> str | None:
        """The name of an input or param leaf; None for computed nodes."""
        return self.attrs.get("name") if self.op in ("input", "param") else None

    def toposort(self) -> list["Node"]:
        return toposort([self])

    def __repr__(self) -> str:
        label = self.name or self.op
        return f"<{label} : {self.type}>"


def toposort(roots: list[Node]) -> list[Node]:
    """Every node reachable from roots, sources before users (iterative: graphs get deep)."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in roots:
        stack: list[tuple[Node, Iterator[Node]]] = [(root, iter(root.srcs))]
        if id(root) in seen:
            continue
        seen.add(id(root))
        while stack:
            node, it = stack[-1]
            for s in it:
                if id(s) not in seen:
                    seen.add(id(s))
                    stack.append((s, iter(s.srcs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order
