"""onnxruntime's com.microsoft ops (graphcore/ops/contrib.py): each op in a small graph run by
onnxruntime, pruned at 50% where it is prunable and proved exact against the zeroed original (which the
unzeroed original must differ from), or blocked with a reason naming the op; and the files
onnxruntime's transformer optimizer writes for a tiny BERT and GPT-2."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from construct.verify import compare_models
from tests.helpers import analyze, assert_exact, group_of, random_removal
from tests.onnx_builder import G

MS = "com.microsoft"
ORT_OPSET = 17


def _model(g: G) -> onnx.ModelProto:
    model = g.model(domains={MS: 1})
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", ORT_OPSET), helper.make_opsetid(MS, 1)])
    return model


def _float_params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def prune_half(model: onnx.ModelProto, expect_groups: int = 1):
    """Remove half of every prunable group; the small model equals the zeroed original within 1e-4 and
    differs from the unzeroed one (the check can fail). Returns the analysis and the small model."""
    a = analyze(model)
    assert not a.unknown_ops, a.unknown_ops
    assert len(a.prunable_groups) >= expect_groups, [(g.size, g.reason) for g in a.groups]
    removed = random_removal(a, np.random.default_rng(0), fraction=0.5)
    small, _plan, _ = assert_exact(a, removed, rtol=1e-4)
    assert not compare_models(model, small, rtol=1e-4).passed, "the unzeroed original equals the small model"
    assert _float_params(small) < _float_params(model)
    return a, small


def _attr(model: onnx.ModelProto, op: str, name: str):
    node = next(n for n in model.graph.node if n.op_type == op)
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _finish(g: G, h: str, width: int, name: str = "out") -> None:
    """A projection to a fixed width, the graph output: its input channels are prunable."""
    g.op("MatMul", [h, g.w(f"{name}.weight", (width, 6))])
    _output(g, [2, 5, 6])


def _output(g: G, shape: list[int]) -> None:
    """The last node's output is the graph output, declared (ONNX's inference stops at a contrib op)."""
    g.nodes[-1].output[0] = "y"
    g.outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, shape))


# -- attention: heads --------------------------------------------------------------------------------


def _attention(**attrs) -> G:
    g = G()
    x = g.input("x", [2, 5, 16])
    sizes = attrs.get("qkv_hidden_sizes", [16, 16, 16])
    total = sum(sizes)
    h = g.op("Attention", [x, g.w("qkv.weight", (16, total)), g.w("qkv.bias", (total,))], domain=MS, **attrs)
    _finish(g, h, sizes[2])
    return g


@pytest.mark.parametrize(
    "attrs",
    [
        {"num_heads": 4},
        {"num_heads": 4, "unidirectional": 1},
        {"num_heads": 2, "qkv_hidden_sizes": [16, 16, 8]},
    ],
    ids=["plain", "causal", "qkv_hidden_sizes"],
)
def test_attention_heads_prune_and_num_heads_follows(attrs):
    a, small = prune_half(_model(_attention(**attrs)))
    heads = group_of(a, "qkv.weight", 1)
    n = attrs["num_heads"]
    assert heads.prunable and heads.size == n, heads
    assert _attr(small, "Attention", "num_heads") == n // 2
    if "qkv_hidden_sizes" in attrs:
        assert _attr(small, "Attention", "qkv_hidden_sizes") == [s // 2 for s in attrs["qkv_hidden_sizes"]]


def test_attention_ops_declare_their_cost():
    """FLOPs of the fused ops count (the report's FLOPs share and the selection read them)."""
    from graphcore.analysis import node_flops

    a = analyze(_model(_attention(num_heads=4)))
    node = next(n for n in a.graph.nodes if n.op == "Attention")
    assert node_flops(node) == 2 * 5 * 16 * 48 + 2 * 5 * 5 * 48


def test_attention_bias_per_head_is_sliced_with_its_heads():
    g = G()
    x = g.input("x", [2, 5, 16])
    ins = [x, g.w("qkv.weight", (16, 48)), g.w("qkv.bias", (48,)), "", "", g.w("attn_bias", (1, 4, 5, 5))]
    _finish(g, g.op("Attention", ins, domain=MS, num_heads=4), 16)
    a, small = prune_half(_model(g))
    assert ("attn_bias", 1) in group_of(a, "qkv.weight", 1).params
    assert next(t for t in small.graph.initializer if t.name == "attn_bias").dims == [1, 2, 5, 5]


def test_attention_heads_tied_to_a_cache_in_the_graph_inputs_are_blocked():
    """A past / present cache is a graph input and output of fixed width: its heads cannot go."""
    g = G()
    x = g.input("x", [2, 5, 16])
    past = g.input("past", [2, 2, 4, 3, 4])
    ins = [x, g.w("qkv.weight", (16, 48)), g.w("qkv.bias", (48,)), "", past]
    out, present = g.op("Attention", ins, n_out=2, domain=MS, num_heads=4, unidirectional=1)
    g.outputs.append(helper.make_tensor_value_info(present, TensorProto.FLOAT, [2, 2, 4, 8, 4]))
    _finish(g, out, 16)
    heads = group_of(analyze(_model(g)), "qkv.weight", 1)
    assert not heads.prunable and "'past'" in heads.reason


def test_attention_with_rotary_is_blocked_with_its_reason():
    a = analyze(_model(_attention(num_heads=4, do_rotary=1)))
    heads = group_of(a, "qkv.weight", 1)
    assert not heads.prunable and "Attention with do_rotary" in heads.reason


def _qkv(g: G, x: str, widths: tuple[int, int, int], rotary_heads: int = 0) -> list[str]:
    outs = []
    for name, w in zip("qkv", widths, strict=True):
        h = g.op("MatMul", [x, g.w(f"{name}.weight", (16, w))])
        if rotary_heads and name in "qk":
            pos = g.const(f"{name}.pos", np.tile(np.arange(5), (2, 1)))
            half = w // rotary_heads // 2
            cos, sin = g.w(f"{name}.cos", (8, half)), g.w(f"{name}.sin", (8, half))
            h = g.op("RotaryEmbedding", [h, pos, cos, sin], domain=MS, num_heads=rotary_heads)
        outs.append(h)
    return outs


def test_multi_head_attention_heads_prune():
    g = G()
    x = g.input("x", [2, 5, 16])
    q, k, v = _qkv(g, x, (16, 16, 8))
    h = g.op("MultiHeadAttention", [q, k, v, g.w("mha.bias", (40,))], domain=MS, num_heads=4)
    _finish(g, h, 8)
    a, small = prune_half(_model(g))
    assert group_of(a, "q.weight", 1).size == 4
    assert _attr(small, "MultiHeadAttention", "num_heads") == 2


def test_rotary_embedding_heads_prune_with_the_attention():
    g = G()
    x = g.input("x", [2, 5, 16])
    q, k, v = _qkv(g, x, (16, 16, 16), rotary_heads=4)
    _finish(g, g.op("MultiHeadAttention", [q, k, v], domain=MS, num_heads=4), 16)
    a, small = prune_half(_model(g))
    assert group_of(a, "k.weight", 1).size == 4
    assert [_attr(small, op, "num_heads") for op in ("RotaryEmbedding", "MultiHeadAttention")] == [2, 2]


def test_rotary_embedding_in_heads_layout_passes_heads_through():
    """(B, N, S, H) input: the head axis passes, the index within a head is pinned."""
    g = G()
    x = g.input("x", [2, 5, 16])
    q = g.op("MatMul", [x, g.w("q.weight", (16, 16))])
    heads = g.op("Transpose", [g.op("Reshape", [q, g.const("split", [2, 5, 4, 4])])], perm=[0, 2, 1, 3])
    pos = g.const("pos", np.tile(np.arange(5), (2, 1)))
    rotated = g.op("RotaryEmbedding", [heads, pos, g.w("cos", (8, 2)), g.w("sin", (8, 2))], domain=MS)
    back = g.op("Transpose", [rotated], perm=[0, 2, 1, 3])
    _finish(g, g.op("Reshape", [back, g.const("merge", [2, 5, 16])]), 16)
    a, _ = prune_half(_model(g))
    assert group_of(a, "q.weight", 1).size == 4


@pytest.mark.parametrize("rotary", [False, True])
def test_group_query_attention_prunes_whole_kv_groups(rotary):
    g = G()
    x = g.input("x", [2, 5, 16])
    head = 16 if rotary else 8  # what onnxruntime's CPU kernel accepts
    q, k, v = _qkv(g, x, (4 * head, 2 * head, 2 * head))  # 4 query heads, 2 KV heads
    seqlens = g.const("seqlens_k", np.full(2, 4), dtype=np.int32)
    total = g.const("total_len", [5], dtype=np.int32)
    rotary_tables = [g.w("cos", (8, head // 2)), g.w("sin", (8, head // 2))] if rotary else []
    h = g.op(
        "GroupQueryAttention",
        [q, k, v, "", "", seqlens, total, *rotary_tables],
        do_rotary=int(rotary),
        n_out=3,
        domain=MS,
        num_heads=4,
        kv_num_heads=2,
    )
    _finish(g, h[0], 4 * head)
    a, small = prune_half(_model(g))
    kv = group_of(a, "k.weight", 1)
    assert kv.size == 2 and kv.prunable
    assert ("q.weight", 1) in kv.params
    assert (
        _attr(small, "GroupQueryAttention", "num_heads"),
        _attr(small, "GroupQueryAttention", "kv_num_heads"),
    ) == (
        2,
        1,
    )


def test_packed_multi_head_attention_is_blocked_with_its_reason():
    g = G()
    x = g.input("x", [2, 5, 16])
    q = g.op("MatMul", [x, g.w("qkv.weight", (16, 48))])
    packed = g.op("Reshape", [q, g.const("shape", [2, 5, 4, 3, 4])])
    _finish(g, g.op("MultiHeadAttention", [packed], domain=MS, num_heads=4), 16)
    a = analyze(_model(g))
    heads = group_of(a, "qkv.weight", 1)
    assert not heads.prunable and "MultiHeadAttention in a packed" in heads.reason


# -- normalizations: hidden pinned, the feed-forward between them prunable --------------------------------


def _ffn(g: G, x: str, act: str, hidden: int = 16, inner: int = 32) -> str:
    h = g.op("MatMul", [x, g.w("fc1.weight", (hidden, inner))])
    if act in ("BiasGelu", "FastGelu"):
        h = g.op(act, [h, g.w("fc1.bias", (inner,))], domain=MS)
    else:
        h = g.op(act, [h], domain=MS)
    return g.op("MatMul", [h, g.w("fc2.weight", (inner, hidden))])


@pytest.mark.parametrize(
    "norm, act",
    [
        ("SkipLayerNormalization", "BiasGelu"),
        ("SkipSimplifiedLayerNormalization", "FastGelu"),
        # onnxruntime declares this one in the ONNX domain, which onnx.checker does not know
        ("SimplifiedLayerNormalization", "QuickGelu"),
        ("SkipLayerNormalization", "Gelu"),
    ],
)
def test_normalizations_prune_hidden_and_pass_the_rest(norm, act):
    """The hidden axis shrinks too, exactly (construct keeps the count: tests/test_hidden_size.py)."""
    g = G()
    x = g.op("MatMul", [g.input("x", [2, 5, 8]), g.w("in.weight", (8, 16))])  # hidden channels of a weight
    h = _ffn(g, x, act)
    if norm == "SimplifiedLayerNormalization":
        y = g.op(norm, [g.op("Add", [h, x]), g.w("ln.weight", (16,))], axis=-1, epsilon=1e-5)
    else:
        params = [g.w("ln.weight", (16,))]
        params += [g.w("ln.bias", (16,))] if norm == "SkipLayerNormalization" else []
        outs = g.op(norm, [h, x, *params, g.w("ln.skip_bias", (16,))], n_out=4, domain=MS)
        y = g.op("Add", [outs[0], outs[3]])  # the residual stream goes on
    _finish(g, y, 16)
    a, _ = prune_half(_model(g))
    inner = group_of(a, "fc1.weight", 1)
    assert inner.prunable and inner.size == 32
    hidden = group_of(a, "in.weight", 1)
    assert hidden.prunable and ("ln.weight", 0) in hidden.params, hidden.reason


def test_embed_layer_normalization_pins_hidden():
    g = G()
    ids = g.input("ids", [2, 5], TensorProto.INT32)
    emb = g.op(
        "EmbedLayerNormalization",
        [ids, "", g.w("word", (10, 16)), g.w("pos", (8, 16)), "", g.w("gamma", (16,)), g.w("beta", (16,))],
        n_out=2,
        domain=MS,
    )[0]
    _finish(g, g.op("Add", [emb, _ffn(g, emb, "BiasGelu")]), 16)
    a, _ = prune_half(_model(g))
    hidden = group_of(a, "word", 1)
    assert not hidden.prunable and "EmbedLayerNormalization normalizes over the hidden axis" in hidden.reason
    assert group_of(a, "fc1.weight", 1).prunable


# -- stems ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_fused_conv_prunes_like_conv(activation):
    g = G()
    x = g.input("x", [1, 3, 8, 8])
    w, b = g.w("c1.weight", (8, 3, 3, 3)), g.w("c1.bias", (8,))
    h = g.op("FusedConv", [x, w, b], domain=MS, activation=activation, pads=[1] * 4)
    g.op("FusedConv", [h, g.w("c2.weight", (4, 8, 3, 3))], domain=MS, activation="Relu", pads=[1] * 4)
    _output(g, [1, 4, 8, 8])
    a, small = prune_half(_model(g))
    assert group_of(a, "c1.weight", 0).size == 8
    assert next(t for t in small.graph.initializer if t.name == "c1.weight").dims[0] == 4


@pytest.mark.parametrize("op", ["FusedMatMul", "TransposeMatMul"])
def test_fused_matmul_prunes_like_matmul(op):
    g = G()
    x = g.input("x", [2, 5, 16])
    h = g.op(op, [x, g.w("fc1.weight", (24, 16))], domain=MS, transB=1, alpha=0.5)
    _finish(g, g.op("Relu", [h]), 24)
    a, _ = prune_half(_model(g))
    assert group_of(a, "fc1.weight", 0).size == 24


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_fused_gemm_prunes_like_gemm(activation):
    g = G()
    x = g.input("x", [6, 16])
    w, b = g.w("fc1.weight", (24, 16)), g.w("fc1.bias", (24,))
    h = g.op("FusedGemm", [x, w, b], domain=MS, transB=1, activation=activation)
    g.gemm(h, 24, 6, "fc2")
    _output(g, [6, 6])
    a, small = prune_half(_model(g))
    assert group_of(a, "fc1.weight", 0).size == 24
    assert next(t for t in small.graph.initializer if t.name == "fc1.weight").dims == [12, 16]


def _pack_4bit(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, K) float weights -> MatMulNBits' B (N, K / block, block / 2), scales, packed zero points."""
    n, k = w.shape
    blocks = w.reshape(n, k // block, block)
    lo, hi = blocks.min(axis=2, keepdims=True), blocks.max(axis=2, keepdims=True)
    scales = np.maximum(hi - lo, 1e-3) / 15.0
    zp = np.clip(np.round(-lo / scales), 0, 15).astype(np.uint8)
    q = np.clip(np.round(blocks / scales) + zp, 0, 15).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)
    zps = zp.reshape(n, -1)
    zps = np.pad(zps, ((0, 0), (0, zps.shape[1] % 2)))
    zp_packed = (zps[:, 0::2] | (zps[:, 1::2] << 4)).reshape(-1)
    return packed, scales.reshape(-1).astype(np.float32), zp_packed


def test_matmul_nbits_output_channels_prune():
    g = G()
    x = g.input("x", [2, 5, 32])
    packed, scales, zp = _pack_4bit(g.rng.standard_normal((12, 32)).astype(np.float32), 16)
    g.inits += [
        numpy_helper.from_array(packed, "q.B"),
        numpy_helper.from_array(scales, "q.scales"),
        numpy_helper.from_array(zp, "q.zp"),
    ]
    h = g.op(
        "MatMulNBits",
        [x, "q.B", "q.scales", "q.zp", "", g.w("q.bias", (12,))],
        domain=MS,
        K=32,
        N=12,
        bits=4,
        block_size=16,
    )
    _finish(g, g.op("Relu", [h]), 12)
    a, small = prune_half(_model(g))
    rows = group_of(a, "q.scales", 0)
    assert rows.size == 12 and ("q.B", 0) in rows.params and ("q.zp", 0) in rows.params
    assert _attr(small, "MatMulNBits", "N") == 6


@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_from_onnxruntimes_quantizer(symmetric):
    """onnxruntime's MatMulNBitsQuantizer (block 32, 2-D scales and zero points) on an MLP. Symmetric
    weights (no zero points): the hidden width prunes in whole blocks (rows of the first, blocks of K of
    the second, K and N rewritten). Asymmetric: zero points pack two blocks to a byte along K, so the
    second op's K is pinned and the hidden width with it."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    g = G(opset=ORT_OPSET)
    x = g.input("x", [4, 64])
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.w("w1", (64, 96))]), g.w("b1", (96,))])])
    g.op("MatMul", [h, g.w("w2", (96, 32))])
    _output(g, [4, 32])
    quantizer = MatMulNBitsQuantizer(_model(g), block_size=32, is_symmetric=symmetric)
    quantizer.process()
    model = quantizer.model.model
    assert [n.op_type for n in model.graph.node].count("MatMulNBits") == 2
    if not symmetric:
        hidden = group_of(analyze(model), "w1_Q4", 0)
        assert not hidden.prunable and "MatMulNBits packs its K axis" in hidden.reason
        return
    a, small = prune_half(model)
    hidden = group_of(a, "w1_Q4", 0)
    assert (
        hidden.size == 3 and ("w2_Q4", 1) in hidden.params
    )  # 96 channels in blocks of 32 and ("w2_scales", 1) in hidden.params
    assert [_attr(small, "MatMulNBits", k) for k in ("K", "N")] == [64, 64]
    second = [n for n in small.graph.node if n.op_type == "MatMulNBits"][1]
    assert {a.name: helper.get_attribute_value(a) for a in second.attribute}["K"] == 64


# -- past a contrib op ONNX's inference gives no shapes: the table's hooks carry them on -------------------


def test_split_and_gemm_after_a_contrib_op_get_their_shapes():
    """ONNX's inference stops at a com.microsoft op: Split's outputs (GPT-2's packed q, k, v) and a
    Gemm's output then come from the declarations, else everything downstream is blocked."""
    g = G()
    x = g.input("x", [6, 16])
    h = g.op("SkipLayerNormalization", [x, x, g.w("ln.weight", (16,))], domain=MS)
    qkv = g.op("Split", [g.gemm(h, 16, 36, "in"), g.const("sizes", [12, 12, 12])], n_out=3, axis=1)
    mixed = g.op("Add", [g.op("Mul", [qkv[0], qkv[1]]), qkv[2]])
    g.gemm(g.op("Relu", [mixed]), 12, 6, "out")
    _output(g, [6, 6])
    a, _ = prune_half(_model(g))
    assert group_of(a, "in.weight", 0).size == 12  # the three parts are one channel space


def test_cnn_optimized_by_an_onnxruntime_session_prunes(tmp_path):
    """An onnxruntime session at ORT_ENABLE_EXTENDED saves FusedConv (Conv + BatchNormalization +
    Relu) and com.microsoft Gelu; ONNX's inference stops at them, and Conv, ReduceMean, Flatten, Gemm
    shapes come from the op table's shape hooks."""
    import onnxruntime as ort

    g = G(opset=ORT_OPSET)
    x = g.input("x", [1, 3, 8, 8])
    a = g.op("Relu", [g.conv(x, 3, 8, name="c1")])
    b = g.op("Relu", [g.bn(g.conv(a, 8, 8, name="c2"), 8, name="bn")])
    pooled = g.op("ReduceMean", [g.op("Add", [a, b])], axes=[2, 3], keepdims=1)  # opset 17: an attribute
    h = g.op("Gelu", [g.gemm(g.op("Flatten", [pooled]), 8, 16, "fc1")], domain=MS)
    g.gemm(h, 16, 4, "fc2")
    _output(g, [1, 4])
    raw, fused = tmp_path / "cnn.onnx", tmp_path / "cnn_fused.onnx"
    onnx.save(_model(g), str(raw))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(fused)
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(fused))
    assert "FusedConv" in {n.op_type for n in model.graph.node}
    a_, _ = prune_half(model, expect_groups=2)
    assert group_of(a_, "fc1.weight", 0).prunable and group_of(a_, "c1.weight", 0).prunable


def test_broadcast_of_different_symbols_is_a_symbol():
    """Two symbols ONNX named afresh broadcast to one more symbol (not an unknown dim), which a Reshape
    to (batch, seq, -1) can then divide out."""
    from graphcore.ops.shape import broadcast_dims

    assert broadcast_dims([("a", 4, "s"), ("b", 4, "s")]) == ("a|b", 4, "s")
    assert broadcast_dims([("a|b", 4), ("a", 4)]) == ("a|b", 4)
    assert broadcast_dims([("a", 4), (None, 4)]) == (None, 4)


# -- what the transformer optimizer writes -------------------------------------------------------------


def _optimized(kind: str, folder) -> str:
    """A tiny BERT, GPT-2 or LLaMA (2 layers, hidden 64, 4 heads, random weights everywhere: no two
    tensors equal, so the optimizer shares none), TorchScript export, then onnxruntime's optimizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from onnxruntime.transformers.optimizer import optimize_model

    torch.manual_seed(0)
    if kind == "bert":
        cfg = transformers.BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100,
            max_position_embeddings=32, attn_implementation="eager",
        )  # fmt: skip
        net = transformers.BertModel(cfg)
        names = ["input_ids", "attention_mask", "token_type_ids"]
    elif kind == "gpt2":
        cfg = transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32, attn_implementation="eager"
        )
        net = transformers.GPT2Model(cfg)
        names = ["input_ids", "attention_mask"]
    else:  # a LLaMA-like decoder: RMSNorm, SwiGLU, rotary positions, 2 KV heads
        cfg = transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=100, max_position_embeddings=32, attn_implementation="eager",
        )  # fmt: skip
        net = transformers.LlamaModel(cfg)
        names = ["input_ids", "attention_mask"]
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    net.eval()

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args):
            kwargs = dict(zip(names, args, strict=True))
            if kind != "bert":
                kwargs["use_cache"] = False
            return self.net(**kwargs).last_hidden_state

    ids = torch.randint(0, 100, (2, 8))
    args = (ids, torch.ones(2, 8, dtype=torch.int64), torch.zeros(2, 8, dtype=torch.int64))[: len(names)]
    raw, out = str(folder / f"{kind}.onnx"), str(folder / f"{kind}_opt.onnx")
    torch.onnx.export(
        Wrapped(), args, raw, input_names=names, output_names=["hidden"], dynamo=False, opset_version=17,
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
    )  # fmt: skip
    model_type = "gpt2" if kind == "llama" else kind  # the optimizer's decoder fusions
    optimize_model(raw, model_type=model_type, num_heads=4, hidden_size=64).save_model_to_file(out)
    return out


@pytest.mark.parametrize(
    "kind",
    [
        "bert",
        pytest.param("gpt2", marks=pytest.mark.slow),
        pytest.param("llama", marks=pytest.mark.slow),
    ],
)
def test_transformer_optimizer_output_prunes(kind, tmp_path):
    """BERT fuses completely (EmbedLayerNormalization, Attention, BiasGelu, SkipLayerNormalization): its
    heads and feed-forward widths prune. GPT-2's and LLaMA's attention stays unfused under transformers
    5 (their mask pattern) and is blocked by standard ops; their feed-forward widths prune."""
    from zigraph.pipeline import load_model, prune

    path = _optimized(kind, tmp_path)
    fused = {n.op_type for n in onnx.load(path).graph.node if n.domain == MS}
    assert (
        fused
        == {
            "bert": {"Attention", "EmbedLayerNormalization", "BiasGelu", "SkipLayerNormalization"},
            "gpt2": {"FastGelu", "SkipLayerNormalization"},
            "llama": {"SkipSimplifiedLayerNormalization"},
        }[kind]
    ), fused
    analysis = analyze(onnx.load(path))
    widths = [g for g in analysis.prunable_groups if g.size == (256 if kind == "gpt2" else 128)]
    assert len(widths) == 2, [(g.size, g.reason) for g in analysis.groups]  # both layers' feed-forward
    if kind == "bert":
        assert [g.size for g in analysis.prunable_groups].count(4) == 2  # both layers' heads
    report = prune(load_model(path), 0.5, tmp_path / "small.onnx")
    result = report.result
    assert result is not None and result.verification is not None and result.verification.passed
    assert result.verification.max_rel <= 1e-4
    assert result.params_after <= 0.9 * result.params_before, (result.params_after, result.params_before)
    original = onnx.load(path)
    small = onnx.load(str(tmp_path / "small.onnx"))
    assert not compare_models(original, small, rtol=1e-4).passed
    if kind == "bert":
        assert {_attr_all(small, "Attention", "num_heads")} == {2}


def _attr_all(model: onnx.ModelProto, op: str, name: str) -> int:
    values = {
        helper.get_attribute_value(a)
        for n in model.graph.node
        if n.op_type == op
        for a in n.attribute
        if a.name == name
    }
    assert len(values) == 1, values
    return values.pop()


def test_skip_normalization_is_zero_only_while_its_sum_output_is_unread():
    """Zeroing gamma and beta zeroes output 0, not input + skip + bias (output 3): erasing may call the
    node zero only while the model does not read that output."""
    from graphcore.ir import Node, Value
    from graphcore.ops import output_is_zero

    def node(read_sum: bool) -> Node:
        ins: list[Value | None] = [Value(n, shape=(2, 3, 4)) for n in ("x", "skip")]
        ins += [Value(n, shape=(4,), is_param=True) for n in ("gamma", "beta")]
        outs = [Value("y", shape=(2, 3, 4)), Value("n::unused1"), Value("n::unused2"), Value("sum")]
        n = Node("n", "SkipLayerNormalization", ins, outs, domain=MS)
        if read_sum:
            outs[3].consumers.append((Node("c", "Relu", [outs[3]], [Value("r")]), 0))
        return n

    flags = [False, False, True, True]
    assert output_is_zero(node(read_sum=False), flags)
    assert not output_is_zero(node(read_sum=True), flags)


@pytest.mark.parametrize(
    "op, shape, attrs, extra",
    [
        ("Conv", [1, 3, 9, 9], {"pads": [1, 2, 1, 0], "strides": [2, 1], "dilations": [1, 2]}, "w"),
        ("Conv", [1, 3, 9, 9], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, "w"),
        ("MaxPool", [1, 3, 9, 8], {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 0]}, ""),
        ("AveragePool", [1, 3, 9, 8], {"kernel_shape": [2, 2], "auto_pad": "VALID"}, ""),
        ("GlobalAveragePool", [1, 3, 9, 8], {}, ""),
        ("ReduceMean", [2, 3, 4, 5], {"axes": [1, 3], "keepdims": 0}, ""),
        ("ReduceSum", [2, 3, 4, 5], {"keepdims": 1}, ""),
        ("ArgMax", [2, 3, 4], {"axis": -1, "keepdims": 0}, ""),
        ("Flatten", [2, 3, 4, 5], {"axis": 2}, ""),
        ("Flatten", [2, 3, 4, 5], {"axis": -1}, ""),
        ("Flatten", [2, 3, 4, 5], {"axis": 0}, ""),
        ("Concat", [2, 3, 4], {"axis": 1}, "twice"),
    ],
)
def test_shape_hooks_agree_with_onnx_inference(op, shape, attrs, extra):
    """The hooks that carry shapes past a contrib op give what ONNX's own inference gives."""
    from graphcore.channels import ChannelGraph
    from graphcore.infer import shape_hook

    g = G(opset=ORT_OPSET)
    x = g.input("x", shape)
    ins = [x, g.w("w", (4, 3, 3, 3))] if extra == "w" else [x, x] if extra == "twice" else [x]
    g.op(op, ins, **attrs)
    dtype = TensorProto.INT64 if op == "ArgMax" else TensorProto.FLOAT
    g.output(g.nodes[-1].output[0], dtype)
    ir = analyze(_model(g)).graph
    node = next(n for n in ir.nodes if n.op == op)
    expected = node.outputs[0].shape
    assert expected is not None and all(isinstance(d, int) for d in expected)
    node.outputs[0].shape = None
    hook = shape_hook(node)
    assert hook is not None and hook(ChannelGraph(), node) == expected
