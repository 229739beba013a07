"""The graph-editing API: every edit keeps producer, consumers, outputs and the name table agreeing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from graphcore.ir import Graph, Node, Value


@dataclass
class Chain:
    """x -> Relu -> y -> Neg -> z, z is the graph output."""

    g: Graph
    x: Value
    y: Value
    z: Value
    relu: Node
    neg: Node


def _chain() -> Chain:
    g = Graph()
    x, y, z = g.value("x", shape=(1, 4)), g.value("y", shape=(1, 4)), g.value("z", shape=(1, 4))
    g.inputs.append(x)
    relu = g.add_node(Node("relu", "Relu", [x], [y]))
    neg = g.add_node(Node("neg", "Neg", [y], [z]))
    g.outputs.append(z)
    return Chain(g, x, y, z, relu, neg)


def _links_agree(g: Graph) -> None:
    """Each direction of every link has its partner, and every linked Value is named in the graph."""
    for node in g.nodes:
        for i, v in enumerate(node.inputs):
            if v is not None:
                assert (node, i) in v.consumers
                assert g.values[v.name] is v
        for v in node.outputs:
            assert v.producer is node
            assert g.values[v.name] is v
    for v in g.values.values():
        for c, i in v.consumers:
            assert c in g.nodes and c.inputs[i] is v
        assert v.producer is None or v.producer in g.nodes


def test_replace_all_uses_moves_consumers_and_graph_outputs():
    c = _chain()
    w = c.g.value("w", shape=(1, 4))
    c.g.add_node(Node("copy", "Identity", [c.z], [w]))
    c.g.replace_all_uses(c.z, c.x)
    assert c.z.consumers == [] and c.g.outputs == [c.x]
    assert c.g.nodes[-1].inputs == [c.x]
    assert (c.g.nodes[-1], 0) in c.x.consumers
    _links_agree(c.g)


def test_replace_all_uses_of_a_value_with_itself_changes_nothing():
    c = _chain()
    c.g.replace_all_uses(c.y, c.y)
    assert c.y.consumers == [(c.neg, 0)]
    _links_agree(c.g)


def test_remove_node_refuses_while_an_output_is_read():
    c = _chain()
    with pytest.raises(ValueError, match="'y' is still used"):
        c.g.remove_node(c.relu)
    with pytest.raises(ValueError, match="'z' is still used"):
        c.g.remove_node(c.neg)  # z is a graph output
    assert c.g.nodes == [c.relu, c.neg] and c.y.producer is c.relu and c.x.consumers == [(c.relu, 0)]
    _links_agree(c.g)


def test_remove_node_after_its_uses_moved_unlinks_it():
    c = _chain()
    c.g.replace_all_uses(c.z, c.y)  # the graph now ends at Relu
    c.g.remove_node(c.neg)
    assert c.g.nodes == [c.relu] and c.y.consumers == [] and c.z.producer is None and c.g.outputs == [c.y]
    c.g.remove_value(c.z)
    assert "z" not in c.g.values
    _links_agree(c.g)


def test_remove_node_drops_only_its_own_uses_of_a_shared_input():
    g = Graph()
    x, y, s = g.value("x"), g.value("y"), g.value("s")
    square = g.add_node(Node("square", "Mul", [x, x], [y]))
    other = g.add_node(Node("other", "Relu", [x], [s]))
    g.remove_node(square)
    assert x.consumers == [(other, 0)] and g.nodes == [other]
    _links_agree(g)


def test_remove_value_refuses_a_connected_value():
    c = _chain()
    for v in (c.x, c.y, c.z):
        with pytest.raises(ValueError, match="still connected"):
            c.g.remove_value(v)
    assert set(c.g.values) == {"x", "y", "z"}


def test_replace_output_hands_the_producer_to_the_new_value():
    c = _chain()
    c.g.replace_all_uses(c.z, c.y)
    final = c.g.value("final", shape=(1, 4))
    c.g.replace_output(c.z, final)
    assert c.neg.outputs == [final] and final.producer is c.neg and c.z.producer is None
    assert "z" not in c.g.values
    _links_agree(c.g)


def test_replace_output_refuses_a_used_or_produced_value():
    c = _chain()
    with pytest.raises(ValueError, match="still connected"):
        c.g.replace_output(c.y, c.g.value("fresh"))  # y is read by Neg
    with pytest.raises(ValueError, match="already produced"):
        c.g.replace_output(c.z, c.y)
    with pytest.raises(ValueError, match="no producer"):
        c.g.replace_output(c.x, c.g.value("other"))


def test_set_input_pads_absent_operands_and_moves_the_use():
    c = _chain()
    axes = c.g.value("axes", shape=(1,))
    c.g.set_input(c.neg, 2, axes)  # past the end: operand 1 stays absent
    assert c.neg.inputs == [c.y, None, axes] and axes.consumers == [(c.neg, 2)]
    c.g.set_input(c.neg, 0, c.x)  # y's use moves to x
    assert c.y.consumers == [] and (c.neg, 0) in c.x.consumers
    c.g.set_input(c.neg, 2, None)
    assert axes.consumers == [] and c.neg.inputs[2] is None
    _links_agree(c.g)
