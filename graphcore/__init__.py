"""graphcore: the framework-neutral core — IR, op semantics table, pruning analysis and report.

It imports neither torch nor onnx: frontends bring models in, construct takes them out.
"""

from graphcore.analysis import analyze
from graphcore.errors import AnalysisError, ModelLoadError, ZigraphError
from graphcore.groups import NodeGroup, ParamSlice, PruneAnalysis
from graphcore.ir import Graph, Node, Value
from graphcore.ops import register_op, rule_for

__all__ = [
    "AnalysisError",
    "Graph",
    "ModelLoadError",
    "Node",
    "NodeGroup",
    "ParamSlice",
    "PruneAnalysis",
    "Value",
    "ZigraphError",
    "analyze",
    "register_op",
    "rule_for",
]
