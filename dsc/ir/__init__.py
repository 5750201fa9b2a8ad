"""The tensor IR: types, declared ops, hash-consed nodes, graphs, text form,
verifier, interpreter and cost model."""

from dsc.ir.cost import graph_cost, node_cost, weight_bytes
from dsc.ir.graph import Graph
from dsc.ir.interpreter import interpret
from dsc.ir.node import Node
from dsc.ir.opdef import OPS, Attr, Cost, OpDef, get_op, register
from dsc.ir.parser import parse_graph
from dsc.ir.printer import print_graph
from dsc.ir.types import DTYPES, DType, TensorType, dtype, sym
from dsc.ir.verifier import verify

__all__ = ["Graph", "Node", "OPS", "Attr", "Cost", "OpDef", "get_op", "register", "parse_graph", "print_graph",
           "DTYPES", "DType", "TensorType", "dtype", "sym", "verify", "interpret", "graph_cost", "node_cost",
           "weight_bytes"]
