"""graphcore: the framework-neutral core — IR, op semantics table, pruning and erasing analyses, report.

It imports neither torch nor onnx: frontends bring models in, construct takes them out.
"""

from graphcore.erase import EraseAnalysis, ErasePlan, Structure
from graphcore.errors import AnalysisError, ModelLoadError, ZigraphError
from graphcore.groups import NodeGroup, ParamSlice, PruneAnalysis
from graphcore.ir import Graph, Node, Value
from graphcore.modes import analyze
from graphcore.ops import register_op, rule_for

__all__ = [
    "AnalysisError",
    "EraseAnalysis",
    "ErasePlan",
    "Graph",
    "ModelLoadError",
    "Node",
    "NodeGroup",
    "ParamSlice",
    "PruneAnalysis",
    "Structure",
    "Value",
    "ZigraphError",
    "analyze",
    "register_op",
    "rule_for",
]
