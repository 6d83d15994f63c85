"""The language: the card's line verbatim, defaults, blocks, residuals, branches, labels, formatting round trip."""
from __future__ import annotations

import pytest
from hypothesis import given, settings

import cnndsl
from conftest import ROOT, SPEC_IDS, SPECS
from strategies import compiles
from strategies import spec as random_spec


def ops(graph):
    return [n.op for n in graph.nodes[1:]]


def test_vgg_card_line_parses_verbatim():
    g = cnndsl.compile_text("(conv3-64 x2 + maxpool) x5 | fc4096 | fc1000 | softmax")
    assert ops(g).count("conv") == 10 and ops(g).count("maxpool") == 5
    assert g.output.shape == (1000,) and g.output.op == "softmax"
    assert g["flatten1"].shape == (64 * 7 * 7,)
    # the classifier (just before softmax) outputs logits; the hidden fc keeps its ReLU
    fcs = [n for n in g.nodes if n.op == "fc"]
    users = g.consumers()
    assert g[users[fcs[0].name][0]].op == "relu"
    assert g[users[fcs[1].name][0]].op == "softmax"


def test_paper_spellings_are_accepted():
    a = cnndsl.compile_text("input 32x32x3\nCONV3-64 LRN + MaxPool | FC-4096 | FC-10 | soft-max")
    b = cnndsl.compile_text("input 32x32x3\nconv3-64 lrn + maxpool | fc4096 | fc10 | softmax")
    assert a.same_as(b)


def test_defaults():
    g = cnndsl.compile_text("conv3-8 + maxpool")
    assert g.input_shape == (3, 224, 224)
    conv = g["conv1"]
    assert conv.attrs["padding"] == (1, 1) and conv.attrs["stride"] == (1, 1) and conv.attrs["bias"]
    assert g["maxpool1"].attrs["kernel"] == (2, 2) and g["maxpool1"].attrs["stride"] == (2, 2)
    assert ops(g) == ["conv", "relu", "maxpool"]


def test_batchnorm_sits_between_conv_and_activation_and_drops_bias():
    g = cnndsl.compile_text("input 8x8x3\nconv3-4 bn + conv3-4[bias] bn + conv3-4 + bn")
    assert ops(g) == ["conv", "bn", "relu", "conv", "bn", "relu", "conv", "bn", "relu"]
    convs = [n for n in g.nodes if n.op == "conv"]
    assert [c.attrs["bias"] for c in convs] == [False, True, False]


def test_spec_wide_activation_and_explicit_overrides():
    g = cnndsl.compile_text("input 8x8x1\nactivation tanh\nconv3-4 + conv3-4 relu + conv3-4 none | fc3")
    assert ops(g) == ["conv", "tanh", "conv", "relu", "conv", "flatten", "fc"]


def test_strides_padding_dilation_rectangular_groups_depthwise():
    g = cnndsl.compile_text("input 32x30x4\nconv7-8/2 + conv1x7-8[pad=0x3] + conv3-8[dilation=2] + conv3-16[groups=4]"
                       " + dwconv3/2 + conv5-4[valid] + conv3-4[pad=0]")
    shapes = [n.shape for n in g.nodes if n.op == "conv"]
    assert shapes == [(8, 16, 15), (8, 16, 15), (8, 16, 15), (16, 16, 15), (16, 8, 8), (4, 4, 4), (4, 2, 2)]
    assert g["conv5"].attrs["groups"] == 16


def test_pooling_kinds():
    g = cnndsl.compile_text("input 31x31x2\nmaxpool3/2 + avgpool3/2[pad=1, ceil] + adaptiveavgpool3x2 + gmp")
    assert [n.shape for n in g.nodes[1:]] == [(2, 15, 15), (2, 8, 8), (2, 3, 2), (2, 1, 1)]


def test_blocks_with_arithmetic_defaults_and_keywords():
    g = cnndsl.compile_text("input 16x16x8\nblock b(c, s=1, e=4) = conv1-c + conv3-c/s + conv1-{e*c}\nb(4) + b(c=2, s=2, e=2)")
    assert [n.shape for n in g.nodes if n.op == "conv"] == [(4, 16, 16), (4, 16, 16), (16, 16, 16),
                                                            (2, 16, 16), (2, 8, 8), (4, 8, 8)]
    assert g.nodes[1].name == "b1.conv1"


def test_residual_identity_and_projection():
    g = cnndsl.compile_text("input 16x16x8\nres(conv3-8 bn + conv3-8 bn) + res(conv3-16/2 bn + conv3-16 bn)")
    names = [n.name for n in g.nodes]
    assert "res1.proj" not in names and "res2.proj" in names and "res2.proj_bn" in names
    proj = g["res2.proj"]
    assert proj.attrs["kernel"] == (1, 1) and proj.attrs["stride"] == (2, 2) and not proj.attrs["bias"]
    # the block's last activation comes after the addition
    assert g.consumers()["res1.add"] == ["res1.relu2"]
    assert g["res1.add"].inputs == ("res1.bn2", "input")


def test_concat_and_labels_and_stages():
    g = cnndsl.compile_text("input 16x16x8\nstem: (conv3-8 + maxpool)\n| mix: cat(conv1-4, conv3-6, maxpool3/1[pad=1])\n"
                       "| head: fc10")
    assert g.stages == ["stem", "mix", "head"]
    assert g["mix.concat"].shape == (18, 8, 8)
    assert g["head"].op == "fc"


def test_repeated_labels_are_numbered():
    g = cnndsl.compile_text("input 8x8x3\n(c: conv3-4 + p: relu) x2")
    assert {"c_1", "c_2", "p_1", "p_2"} <= {n.name for n in g.nodes}


def test_comments_newlines_semicolons_and_continuations():
    text = """
    # a comment line
    input 16x16x3   # trailing comment
    block b(c) = conv3-c
        + conv3-c
    b(4) + maxpool
    | fc10 ; 
    """
    g = cnndsl.compile_text(text)
    assert ops(g) == ["conv", "relu", "conv", "relu", "maxpool", "flatten", "fc"]
    assert cnndsl.compile_text("input 8x8x1; conv3-2; fc3").output.shape == (3,)


def test_layer_call_syntax():
    a = cnndsl.compile_text("input 8x8x1\nconv(3, 4, 2) + dropout(0.3) + lrn(size=3)")
    b = cnndsl.compile_text("input 8x8x1\nconv3-4/2 + dropout0.3 + lrn3")
    assert a.same_as(b)


def test_spans_point_into_the_source():
    text = "input 8x8x1\nconv3-4 + maxpool"
    g = cnndsl.compile_text(text)
    span = g["maxpool1"].span
    assert (span.line, span.column) == (2, 11) and text[span.start:span.end] == "maxpool"


@pytest.mark.parametrize("layer, word, lead, size", [
    ("conv3-64", "conv", "3", "64"), ("Conv11-96/4", "Conv", "11", "96"), ("conv3-64x2", "conv", "3", "64x2"),
    ("conv1x7-64", "conv", "1x7", "64"), ("FC-4096", "FC", None, "4096"), ("conv3-c", "conv", "3", "c"),
    ("conv5-{2*c}", "conv", "5", "2*c"), ("lrn5-2.5", "lrn", "5", "2.5")])
def test_layer_parts_have_their_own_spans(layer, word, lead, size):
    # whichever way the lexer splits a layer, each part's span slices back to its text, on any line and column
    text = f"input 8x8x1\n# a comment\nblock b(c=4) = conv1-c +  {layer}[bias] + maxpool\nb(4)"
    spec = cnndsl.parse(text)
    node = spec.statements[1].body.items[1]
    assert text[node.word_span.start:node.word_span.end] == word and node.word == word
    assert (node.word_span.line, node.word_span.column) == (3, text.splitlines()[2].index(layer) + 1)
    got_lead = None if node.lead is None else text[node.lead.span.start:node.lead.span.end]
    assert got_lead == lead and text[node.size.span.start:node.size.span.end] == size
    assert text[node.span.start:node.span.end] == layer + "[bias]"
    for part in (node.word_span, node.size.span, node.span):
        line_start = text.rfind("\n", 0, part.start) + 1
        assert part.line == 3 and part.column == part.start - line_start + 1


def test_ir_is_immutable_and_topological():
    g = cnndsl.compile_text("input 8x8x1\nres(conv3-4 + conv3-4, conv1-4) | fc2")
    with pytest.raises(TypeError):
        g.nodes[1].attrs["out"] = 3
    seen = set()
    for n in g.nodes:
        assert all(i in seen for i in n.inputs)
        seen.add(n.name)


@pytest.mark.parametrize("path", SPECS, ids=SPEC_IDS)
def test_format_round_trip_on_specs(path):
    text = path.read_text()
    printed = cnndsl.format_spec(text)
    base = path.parent       # where a spec's `use` lines read its family from
    assert cnndsl.compile_text(printed, base=base).same_as(cnndsl.compile_text(text, base=base))
    assert cnndsl.format_spec(printed) == printed


@settings(max_examples=150, deadline=None)
@given(random_spec())
def test_format_round_trip_generated(text):
    original = compiles(text)
    printed = cnndsl.format_spec(text)
    assert cnndsl.compile_text(printed).same_as(original)
    assert cnndsl.format_spec(printed) == printed


def test_input_override():
    g = cnndsl.compile_text("conv3-8/2 | gap | fc4", input_shape=(64, 48, 1))
    assert g.input_shape == (1, 64, 48) and g["conv1"].shape == (8, 32, 24)


REPLAYED = [
    "input 32x32x3\nblock b(c, s=1) = res(conv3-c/s bn + conv3-c bn)\n"
    "stem: conv3-16 bn | b(16) x3 | b(32, 2) + b(32) x2 | down: b(64, 2) + tail: b(64) | gap | fc10",
    "input 32x32x3\nblock inner(c) = res(conv1-c bn + conv3-c bn + conv1-{4*c} bn)\n"
    "block outer(c) = inner(c) + inner(c) + head: conv1-{c} bn\nouter(8) x2 | mid: outer(8) | outer(16) | gap | fc5",
    "input 28x28x1\nblock inc(a, b, c) = cat(conv1-a, conv1-b + conv3-{b*2}, maxpool3/1[pad=1] + conv1-c)\n"
    "inc(4, 4, 4) x2 | inc(4, 4, 4) + maxpool | inc(8, 2, 2) x2 | gap | fc3",
    "input 32x32x3\nblock lab(c) = first: conv3-c bn + second: conv3-c + proj: conv1-c none\n"
    "lab(8) x3 | named: lab(8) | lab(8) + lab(4) | fc2",
    "input 16x16x3\nblock a(c) = add(conv3-c bn, conv1-c bn)\na(8) x3 | a(8) + a(16) + a(16) | fc2",
    "input 64x64x3\nblock t(c) = conv3-c bn\nt(8) + bn + t(8) x2 | t(8) | t(16) x2 + bn | fc2",
]


@pytest.mark.parametrize("text", REPLAYED + [p.read_text() for p in SPECS
                                          if "block" in p.read_text() or "use " in p.read_text()])
def test_replayed_block_calls_equal_lowering_them_again(text, monkeypatch):
    # the reference: every call lowered from its syntax tree; names, spans, labels, stages and attributes
    replayed = cnndsl.compile_text(text, base=ROOT / "specs")
    monkeypatch.setattr("cnndsl.frontend.lower._Lowering.replay_calls", False)
    fresh = cnndsl.compile_text(text, base=ROOT / "specs")
    assert replayed.dump() == fresh.dump()
    assert [(n.name, n.span, n.label, n.stage, dict(n.attrs)) for n in replayed.nodes] == \
        [(n.name, n.span, n.label, n.stage, dict(n.attrs)) for n in fresh.nodes]


def test_same_padding_keeps_the_size_or_is_refused():
    for text in ("conv3-8[same]", "conv5-8[pad=same]", "conv3x5-8[same, dilation=2]", "conv2-8[same, dilation=2]",
                 "conv(3, 8, pad=same)", "dwconv3[same]"):
        g = cnndsl.compile_text("input 8x8x3\n" + text)
        assert g["conv1"].shape[1:] == (8, 8), text
    # at stride S an odd kernel's 'same' gives ceil(n/S), as in TensorFlow
    assert cnndsl.compile_text("input 9x9x3\nconv3-8/2[same]")["conv1"].shape == (8, 5, 5)
    # the implicit default is the documented d*(K-1)//2 on each side, also for an even kernel: the size shrinks
    g = cnndsl.compile_text("input 8x8x3\nconv4-8")
    assert g["conv1"].attrs["padding"] == (1, 1) and g["conv1"].shape == (8, 7, 7)
    # an explicit 'same' with an even effective kernel pads asymmetrically (the odd cell after), never 7x7
    for text in ("conv4-8[same]", "conv4-8[pad=same]", "conv3x2-8[same]", "conv2-8[same, dilation=3]"):
        g = cnndsl.compile_text("input 8x8x3\n" + text)
        assert g["conv1"].shape[1:] == (8, 8), text
        a = g["conv1"].attrs
        assert all(a["padding"][i] + a["pad_end"][i] == a["dilation"][i] * (a["kernel"][i] - 1) for i in (0, 1))
        assert all(0 <= a["pad_end"][i] - a["padding"][i] <= 1 for i in (0, 1)), text


def test_options_that_agree_are_accepted():
    g = cnndsl.compile_text("input 8x8x4\ndwconv3[groups=dw] + dwconv3[groups=4] + conv3-8[nobias] + conv3-8[bias=false]"
                            " + lrn[size=3] + lrn3 + dropout[p=0.3] + dropout0.3 | fc4[bias=false]")
    assert [n.attrs["groups"] for n in g.nodes if n.op == "conv"] == [4, 4, 1, 1]
    assert [n.attrs["bias"] for n in g.nodes if n.op in ("conv", "fc")] == [True, True, False, False, False]
    assert {n.attrs["size"] for n in g.nodes if n.op == "lrn"} == {3}
    assert {n.attrs["p"] for n in g.nodes if n.op == "dropout"} == {0.3}


def test_real_options_at_the_float32_edges():
    from cnndsl import limits
    g = cnndsl.compile_text(f"bn[eps={limits.MIN_BN_EPS!r}, momentum=1.2e-38] + leakyrelu[slope=-1.2e-38]"
                            " + dropout[p=0.9999999] + bn[momentum=0] + elu[alpha=0]")
    assert g["bn1"].attrs["eps"] == 1e-12 and g["dropout1"].attrs["p"] == 0.9999999
    assert limits.float32(0.9999999) < 1.0 and limits.float32(0.99999999999) == 1.0
    assert limits.float32_trouble(1e-39) and limits.float32_trouble(-3.5e38) and limits.float32_trouble(0.0) is None
    g = cnndsl.compile_text("augment flip=1, crop=1e-30, scale=0.5\nconv3-8")
    assert g.settings["augment"] == "flip=1,crop=1e-30,scale=0.5"


LINES = ["input 8x8x3", "conv3-8 # a comment that a lone CR must end", "fc10"]


@pytest.mark.parametrize("bom", ["", "\ufeff"], ids=["no-bom", "bom"])
@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r", "mixed"])
def test_byte_order_mark_and_every_line_end(tmp_path, bom, sep):
    want = cnndsl.compile_text("\n".join(LINES))
    text = bom + ("\r\n".join(LINES[:2]) + "\r" + LINES[2] + "\n" if sep == "mixed" else sep.join(LINES))
    path = tmp_path / "spec.cnn"
    path.write_bytes(text.encode("utf-8"))
    for g in (cnndsl.compile_text(text), cnndsl.compile(path)):
        assert g.dump() == want.dump()
        assert [(n.span.line, n.span.column) for n in g.nodes] == [(n.span.line, n.span.column) for n in want.nodes]
    assert cnndsl.format_spec(text) == cnndsl.format_spec("\n".join(LINES))
