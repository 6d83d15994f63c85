"""The language for the modern CNN zoo: names with digits, blocks without (), {expr} options, flags in layer
calls, `x 2`, arithmetic functions (make_divisible held to torchvision's), `param` with --set, `input {expr}`,
and `use "file"` for families; with the hostile inputs of each."""
from __future__ import annotations

import math
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import limits
from cnndsl.errors import LimitError, NameError_, SyntaxError_, ValueError_
from cnndsl.frontend.lower import _Lowering
from cnndsl.frontend.lower import make_divisible as our_make_divisible
from conftest import SPEC_IDS, SPECS


def same(a: str, b: str) -> bool:
    return cnndsl.compile_text(a).same_as(cnndsl.compile_text(b))


def layers(text: str) -> list:
    """What each node computes, without its name: op, attributes and shape."""
    return [(n.op, dict(n.attrs), n.shape) for n in cnndsl.compile_text(text).nodes]


def refused(text: str, **kwargs) -> cnndsl.CnnDslError:
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.compile_text(text, filename="zoo.cnn", **kwargs)
    err = info.value
    rendered = err.render()
    assert "Traceback" not in rendered and err.message
    if err.span is not None:
        assert rendered.startswith(f"zoo.cnn:{err.line}:{err.column}: ") and "^" in rendered, rendered
    return err


def evaluate(expr: str):
    """The value of an expression, as a `param` gets it."""
    lowering = _Lowering(cnndsl.parse(f"param v = {expr}\nrelu"), None)
    lowering.declare_params()
    return lowering.params["v"]


# ---------------------------------------------------------------- names with digits ----

def test_block_and_parameter_names_may_hold_digits():
    g = cnndsl.compile_text("input 16x16x3\nblock e1(c) = conv3-c\nblock incep3a(w2, c_2x=1) = conv1-{w2-1} + conv3-w2"
                            "\nblock my-block2 = relu\ne1(4) + incep3a(9) + my-block2 + e1(c=2)")
    assert [n.attrs["out"] for n in g.nodes if n.op == "conv"] == [4, 8, 9, 2]
    assert [n.name for n in g.nodes if n.op == "conv"] == ["e1_1.conv1", "incep3a1.conv1", "incep3a1.conv2",
                                                          "e1_2.conv1"]


@pytest.mark.parametrize("layer, word, lead, size", [
    ("conv3-64", "conv", 3, 64), ("fc4096", "fc", 4096, None), ("dropout0.5", "dropout", 0.5, None),
    ("maxpool3", "maxpool", 3, None), ("relu6", "relu", 6, None), ("Max_Pool3", "Max_Pool", 3, None),
    ("FC-4096", "FC", None, 4096), ("adaptiveavgpool7x7", "adaptiveavgpool", (7, 7), None),
    ("conv3x3-64", "conv", (3, 3), 64), ("conv3-64x2", "conv", 3, (64, 2)), ("lrn5", "lrn", 5, None),
    ("soft-max3", "soft-max", 3, None), ("dense128", "dense", 128, None), ("conv_3-8", "conv_", 3, 8)])
def test_layers_still_lex_as_layers(layer, word, lead, size):
    node = cnndsl.parse(layer).statements[0]
    assert node.word == word
    assert (None if node.lead is None else node.lead.value) == lead
    assert (None if node.size is None else node.size.value) == size


def test_input_line_forms_are_unchanged():
    for text in ("input32x32x3\nrelu", "input 32x32x3\nrelu", "input 32\u00d732\u00d73\nrelu"):
        assert cnndsl.compile_text(text).input_shape == (3, 32, 32)


def test_a_digit_name_has_one_span():
    text = "block incep3a = relu\nconv3-4 + incep3a x 2 + incep3a()"
    spec = cnndsl.parse(text)
    rep, call = spec.statements[1].items[1], spec.statements[1].items[2]
    assert text[rep.body.word_span.start:rep.body.word_span.end] == "incep3a"
    assert text[call.name_span.start:call.name_span.end] == "incep3a"
    assert (rep.body.word_span.line, rep.body.word_span.column) == (2, 11)
    expr = cnndsl.parse("block b(c2) = conv3-{c2-1}\nb(2)").statements[0].body.size
    assert expr.op == "-" and expr.left.name == "c2" and expr.right.value == 1


@pytest.mark.parametrize("text, line, col, words", [
    ("block fc1 = relu\nrelu", 1, 7, "'fc1' cannot be a block name"),
    ("block conv2a(c) = relu\nrelu", 1, 7, "starts with the layer word 'conv'"),
    ("block b(fc1) = relu\nrelu", 1, 9, "'fc1' cannot be a parameter name"),
    ("param relu6 = 1\nrelu", 1, 7, "cannot be a param name"),
    ("param Max_Pool2 = 1\nrelu", 1, 7, "layer word 'Max_Pool'"),
    ("block relu6 = relu\nrelu", 1, 7, "built-in layer"),
    ("block res = relu\nrelu", 1, 7, "'res' cannot be a block name"),
    ("block b = relu\nconv3-4 + incep3a", 2, 11, "unknown layer 'incep3a'"),
    ("block e1 = relu\ne2", 2, 1, "did you mean 'e1'?"),
    ("conv3-4 + maxpol3", 1, 11, "did you mean 'maxpool3'?"),
    ("conv3-4 + convv3-8", 1, 11, "did you mean 'conv3'?"),
    ("conv3-4 + res", 1, 11, "res(...) takes what it joins"),
    ("block stem = relu\nstem[valid]", 2, 1, "'stem' is a block"),
    ("block b(c) = conv3-{fc1}\nb(1)", 1, 23, "'fc1' reads as the layer fc with the size 1"),
    ("block e1 = relu\ne1 0.5", 2, 4, "'e1' holds digits, so it is a block's name and takes no size"),
    ("e1x 20.5", 1, 5, "a number right after the name 'e1x'"),
])
def test_digit_names_that_read_as_layers_are_refused(text, line, col, words):
    err = refused(text)
    assert (err.line, err.column) == (line, col), err.render()
    assert words in err.render()


def test_long_digit_names_are_refused_without_building_them():
    err = refused("block " + "a1" * 100 + " = relu\nrelu")
    assert isinstance(err, LimitError) and "characters" in err.message
    start = time.perf_counter()
    err = refused("input 8x8x3\n" + "a1" * 400_000)
    assert isinstance(err, LimitError) and time.perf_counter() - start < 5


# ---------------------------------------------------------------- blocks without () ----

def test_blocks_without_parameters():
    a = "input 16x16x3\nblock stem = conv3-8/2 bn\nblock head() = gap | fc10\nstem | s: (stem x 2) | head"
    b = "input 16x16x3\nblock stem() = conv3-8/2 bn\nblock head() = gap | fc10\nstem() | s: (stem() x2) | head()"
    assert same(a, b)
    assert cnndsl.compile_text(cnndsl.format_spec(a)).same_as(cnndsl.compile_text(a))


def test_keywords_are_names_where_they_cannot_be_merges():
    g = cnndsl.compile_text("param res = 32\nblock b(add, cat=2) = conv3-{add + cat}\ninput {res}x{res}x3\n"
                            "b(1) + res(conv3-3) + cat(identity, conv1-2) + add(relu, none)")
    assert g.input_shape == (3, 32, 32) and g["b1.conv1"].attrs["out"] == 3
    assert g.output.shape == (5, 32, 32)


# ---------------------------------------------------------------- {expr} and expressions in options ----

def test_braced_and_plain_expressions_as_options_and_arguments():
    a = "input 8x8x64\nblock g(w) = conv3-w[groups={w/16}] + conv3-w[groups=w/16, dilation={1+1}] + dropout[p={0.1*2}]\ng(64)"
    b = "input 8x8x64\nconv3-64[groups=4] + conv3-64[groups=4, dilation=2] + dropout[p=0.2]"
    assert layers(a) == layers(b)
    assert layers("input 8x8x3\nblock b(c) = conv3-c\nb({2*4}) + b(c={(3)})") == layers("input 8x8x3\nconv3-8 + conv3-3")
    printed = cnndsl.format_spec(a)
    assert cnndsl.compile_text(printed).same_as(cnndsl.compile_text(a))


# ---------------------------------------------------------------- flags in layer calls ----

def test_layer_calls_take_flags():
    a = "input 16x16x8\nblock dw(k, s=1) = dwconv(k, stride=s, nobias) bn\ndw(3, 2) + conv(3, 16, 1, valid, dilation=2)" \
        " + maxpool(3, stride=2, ceil)"
    b = "input 16x16x8\ndwconv3/2[nobias] bn + conv3-16/1[valid, dilation=2] + maxpool3/2[ceil]"
    assert layers(a) == layers(b)


def test_a_bare_name_that_is_a_parameter_is_its_value():
    # `same` is the block's parameter here, so it is a value, not the flag [same]
    g = cnndsl.compile_text("input 8x8x3\nblock b(c, same) = conv(3, c, same)\nb(4, 2)")
    assert g["b1.conv1"].attrs["stride"] == (2, 2) and g["b1.conv1"].shape == (4, 4, 4)
    g = cnndsl.compile_text("param valid = 2\ninput 8x8x3\nconv(3, 4, valid)")
    assert g["conv1"].attrs["stride"] == (2, 2)


@pytest.mark.parametrize("text, line, col, words", [
    ("input 8x8x3\nconv(3, nobias, 8)", 2, 17, "positional argument after a flag"),
    ("input 8x8x3\nconv(3, pad=1, 8)", 2, 16, "positional argument after a keyword argument"),
    ("input 8x8x3\nconv(3, 8, nobias, nobias)", 2, 20, "option 'nobias' given twice"),
    ("input 8x8x3\nconv(3, 8, valid, pad=1)", 2, 1, "padding"),
    ("input 8x8x3\nblock b(kernel) = conv(kernal, 8)\nb(3)", 2, 24, "did you mean the parameter 'kernel'?"),
    ("input 8x8x3\nblock b(kernel) = conv(3, 8, kernal)\nb(3)", 2, 30, "did you mean the parameter 'kernel'?"),
    ("input 8x8x3\nconv(3, 8, nobais)", 2, 12, "did you mean 'nobias'?"),
    ("input 8x8x3\nconv(3, 8, 1, 1)", 2, 1, "at most 3 positional arguments"),
])
def test_layer_call_errors(text, line, col, words):
    err = refused(text)
    assert (err.line, err.column) == (line, col), err.render()
    assert words in err.render()


# ---------------------------------------------------------------- x 2 ----

def test_a_repeat_may_have_a_space_before_its_count():
    want = "input 8x8x3\n(conv3-4 bn) x2 + relu x3 + conv3-4 x{2}"
    for text in ("input 8x8x3\nconv3-4 bn x 2 + relu x  3 + conv3-4 x {2}",
                 "input 8x8x3\nconv3-4 bn \u00d7 2 + relu X\t3 + conv3-4 x{2}"):
        assert same(text, want), text
    assert cnndsl.format_spec("relu x 2") == "relu x2\n"


@pytest.mark.parametrize("text, line, col, words", [
    ("conv3-64 x 2.5", 1, 10, "a repeat count is a whole number"),
    ("conv3-64 x 0", 1, 10, "at least 1"),
    ("conv3-64 x\n2", 2, 1, "unexpected token '2'"),
    ("conv3-64 x 100001", 1, 10, "beyond the limit"),
])
def test_repeat_count_errors(text, line, col, words):
    err = refused(text)
    assert (err.line, err.column) == (line, col), err.render()
    assert words in err.render()


# ---------------------------------------------------------------- identity ----

def test_identity_and_none_pass_the_input_through_a_branch():
    g = cnndsl.compile_text("input 8x8x3\ncat(identity, conv1-4) + add(none, conv1-7) + res(conv3-7, identity)")
    assert g["cat1.concat"].inputs == ("input", "cat1.b2.relu1")
    assert g["add1.add"].inputs[0] == "cat1.concat"
    assert g["res1.add"].inputs[1] == "add1.add"
    assert same("input 8x8x3\ncat(identity, conv1-4)", "input 8x8x3\ncat(none, conv1-4)")


# ---------------------------------------------------------------- functions ----

@pytest.mark.parametrize("expr, value", [
    ("ceil(2.1)", 3), ("ceil(-1.5)", -1), ("floor(2.9)", 2), ("floor(-1.5)", -2), ("ceil(4)", 4),
    ("round(2.5)", 2), ("round(3.5)", 4), ("round(-2.5)", -2), ("round(2.6)", 3), ("round(7)", 7),
    ("min(3, 1.5, 2)", 1.5), ("max(3, 1.5, 2)", 3), ("max(7)", 7), ("MAX(1, 2)", 2),
    ("make_divisible(30)", 32), ("make_divisible(30, 8)", 32), ("make_divisible(3, 8)", 8),
    ("make_divisible(37.5, divisor=8)", 40), ("make_divisible(30, 8, 48)", 48), ("make_divisible(v=30, min_value=none)", 32),
    ("make_divisible(32 * 1.4, 8)", 48), ("make_divisible(12, 16)", 16), ("make_divisible(100, 3.0)", 99),
    ("ceil(3 * 1.1) + {2}", 6), ("max(ceil(2.5), floor(7.9)) * 2", 14), ("ceil(2.0) / 2", 1),
])
def test_function_values(expr, value):
    got = evaluate(expr)
    assert got == value and type(got) is type(value), (expr, got)


def test_whole_results_are_counts():
    g = cnndsl.compile_text("param width = 1.5\ninput 8x8x3\nconv3-{64*width} x{ceil(1.2)} + conv1-{round(width*10)}"
                            " + maxpool{max(2.0, 1)}")
    assert g["conv1"].attrs["out"] == 96 and g["conv2"].attrs["out"] == 96 and g["conv3"].attrs["out"] == 15
    assert g["maxpool1"].attrs["kernel"] == (2, 2)
    err = refused("conv3-{64*1.1}")
    assert "whole number" in err.message


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(-1e6, 1e7, allow_nan=False), st.integers(-10**6, 10**7)), st.integers(1, 256),
       st.one_of(st.none(), st.integers(-5, 512), st.floats(0, 512, allow_nan=False)))
def test_make_divisible_is_torchvisions(v, divisor, min_value):
    tv = pytest.importorskip("torchvision.models._utils")
    assert our_make_divisible(v, divisor, min_value) == tv._make_divisible(v, divisor, min_value)
    assert type(our_make_divisible(v, divisor, min_value)) is type(tv._make_divisible(v, divisor, min_value))


@settings(max_examples=150, deadline=None)
@given(st.floats(0.01, 1e5, allow_nan=False), st.sampled_from([1, 2, 3, 4, 8, 16, 32]),
       st.one_of(st.none(), st.integers(1, 64)))
def test_make_divisible_in_a_spec_is_torchvisions(v, divisor, min_value):
    tv = pytest.importorskip("torchvision.models._utils")
    minimum = "none" if min_value is None else str(min_value)
    g = cnndsl.compile_text(f"param v = {v!r}\ninput 1x1x1\nconv1-{{make_divisible(v, {divisor}, {minimum})}}")
    assert g["conv1"].attrs["out"] == tv._make_divisible(v, divisor, min_value)


@pytest.mark.parametrize("text, cls, col, words", [
    ("conv3-{ceil()}", ValueError_, 8, "ceil() takes 1 argument, got 0"),
    ("conv3-{floor(1, 2)}", ValueError_, 8, "floor() takes 1 argument, got 2"),
    ("conv3-{min()}", ValueError_, 8, "min() takes at least 1 argument"),
    ("conv3-{sqrt(4)}", NameError_, 8, "unknown function 'sqrt'"),
    ("conv3-{celi(4)}", NameError_, 8, "did you mean 'ceil'?"),
    ("conv3-{conv(4)}", NameError_, 8, "is a layer"),
    ("conv3-{round(x=2)}", ValueError_, 14, "takes no keyword arguments"),
    ("conv3-{make_divisible(v=3, 8)}", ValueError_, 28, "positional argument after a keyword"),
    ("conv3-{make_divisible(3, v=3)}", ValueError_, 26, "got 'v' twice"),
    ("conv3-{make_divisible(3, divisor=8, divisor=4)}", ValueError_, 37, "got 'divisor' twice"),
    ("conv3-{make_divisible(3, 8, 8, 8)}", ValueError_, 8, "takes 1 to 3 arguments"),
    ("conv3-{make_divisible(divisor=8)}", ValueError_, 8, "takes 1 to 3 arguments"),
    ("conv3-{make_divisible(3, dvisor=8)}", NameError_, 26, "did you mean 'divisor'?"),
    ("conv3-{make_divisible(3, 0)}", ValueError_, 26, "divisor must be a whole number of at least 1"),
    ("conv3-{make_divisible(3, 2.5)}", ValueError_, 26, "divisor must be a whole number"),
    ("conv3-{make_divisible(none)}", ValueError_, 23, "needs numbers, got none"),
    ("conv3-{ceil(3x3)}", ValueError_, 13, "needs numbers, got 3x3"),
    ("conv3-{ceil(1/0)}", ValueError_, 15, "division by zero"),
    ("conv3-{ceil(1e300)}", LimitError, 13, "beyond 1e+15"),
    ("conv3-{round(-1e16)}", LimitError, 14, "beyond 1e+15"),
    ("conv3-{make_divisible(1e15, 6e14)}", LimitError, 8, "absurdly large"),
    ("conv3-{make_divisible(1, 8, 1e300)}", LimitError, 29, "beyond 1e+15"),
    ("conv3-{max(1e300, 1)}", LimitError, 12, "max() of a number beyond 1e+15"),
    ("conv3-{ceil(0.5) - 1}", ValueError_, 8, "at least 1"),
    ("conv3-{" + "ceil(" * 70 + "1" + ")" * 70 + "}", LimitError, 7 + 64 * 5, "nested more than 64"),
])
def test_function_errors(text, cls, col, words):
    err = refused("input 8x8x3\n" + text)
    assert type(err) is cls and (err.line, err.column) == (2, col), err.render()
    assert words in err.render()


def test_block_as_function_is_named():
    err = refused("block b(c) = relu\nconv3-{b(2)}")
    assert "'b' is a block" in err.hint


def test_deep_function_nesting_within_the_bracket_limit():
    text = "input 8x8x3\nconv3-{" + "ceil(" * 60 + "2" + ")" * 60 + "}"
    assert cnndsl.compile_text(text)["conv1"].attrs["out"] == 2


# ---------------------------------------------------------------- params ----

def test_params_everywhere_a_number_goes():
    text = """
    param width = 1.0
    param depth = 2
    param res = 16
    param slope = 0.1
    param base = 8 * width          # a param may use the params before it
    input {res}x{res}x3
    activation leakyrelu[slope=slope]
    augment crop={res/8}
    block b(c, n=depth) = conv3-{make_divisible(c * width, 4)} x{n}
    b(base) | b(16, 1) + dropout[p={slope * 2}] | gap | fc10
    """
    g = cnndsl.compile_text(text)
    assert g.input_shape == (3, 16, 16) and g.settings["augment"] == "crop=2"
    assert [n.attrs["out"] for n in g.nodes if n.op == "conv"] == [8, 8, 16]
    assert g["b1.leakyrelu1"].attrs["slope"] == 0.1
    g = cnndsl.compile_text(text, overrides={"width": 2, "depth": 1, "res": 32})
    assert g.input_shape == (3, 32, 32) and [n.attrs["out"] for n in g.nodes if n.op == "conv"] == [32, 32]
    assert cnndsl.compile_text(text, overrides={"res": 32}, input_shape=(8, 8, 3)).input_shape == (3, 8, 8)


def test_a_block_parameter_shadows_a_param():
    g = cnndsl.compile_text("param c = 4\ninput 8x8x3\nblock b(c) = conv3-c\nb(2) + conv3-c")
    assert [n.attrs["out"] for n in g.nodes if n.op == "conv"] == [2, 4]


@pytest.mark.parametrize("text, overrides, cls, where, words", [
    ("param w = 1\nparam w = 2\nrelu", None, NameError_, (2, 7), "param 'w' is declared twice"),
    ("param w = 3x3\nrelu", None, ValueError_, (1, 11), "must be a number, got 3x3"),
    ("param w = v * 2\nparam v = 1\nrelu", None, NameError_, (1, 11), "unknown name 'v'"),
    ("param w = 1\nrelu", {"widht": 2}, NameError_, None, "the spec's params are: w"),
    ("param width = 1\nrelu", {"widht": 2}, NameError_, None, "did you mean 'width'?"),
    ("param width = 1\nparam depth = 1\nrelu", {"widht": 2}, NameError_, None, "params are: width, depth"),
    ("relu", {"w": 2}, NameError_, None, "declares no params"),
    ("param w = 1\nrelu", {"w": "2"}, ValueError_, None, "must be a number"),
    ("param w = 1\nrelu", {"w": True}, ValueError_, None, "must be a number"),
    ("param w = 1\nrelu", {"w": math.nan}, LimitError, None, "finite"),
    ("param w = 1\nrelu", {"w": math.inf}, LimitError, None, "finite"),
    ("param w = 1\nrelu", {"w": 1e16}, LimitError, None, "finite"),
    ("param w = 1\nrelu", {3: 1}, ValueError_, None, "name is text"),
    ("param res = 2.5\ninput {res}x{res}x3\nrelu", None, ValueError_, (2, 8), "whole numbers, got 2.5"),
    ("param res = 0\ninput {res}x8x3\nrelu", None, ValueError_, (2, 8), "at least 1"),
    ("param res = 2000000\ninput 8x{res}x3\nrelu", None, LimitError, (2, 10), "beyond the limit"),
    ("param r = 8\ninput {r}x{r}\nrelu", None, ValueError_, (2, 1), "height, width and channels"),
    ("param r = 8\ninput {r}x{r}x3\ninput 8x8x3\nrelu", None, ValueError_, (3, 1), "declared twice"),
    ("input {r}x8x3\nrelu", None, NameError_, (1, 8), "param NAME = VALUE"),
])
def test_param_errors(text, overrides, cls, where, words):
    err = refused(text, overrides=overrides)
    assert type(err) is cls, err.render()
    assert (err.span is None) if where is None else ((err.line, err.column) == where), err.render()
    assert words in err.render()


def test_input_sizes_from_expressions():
    for text in ("param r = 8\ninput {r}x{r}x3", "param r = 8\ninput 8x8x{r-5}", "param r = 8\ninput {r} x 8 x 3",
                 "param r = 8\ninput {r}x8x3", "param r = 8\ninput 8x{r}x{3}", "input {4*2}x{8.0}x3"):
        assert cnndsl.compile_text(text + "\nrelu").input_shape == (3, 8, 8), text
    err = refused("input {1}x{1}x{1}x{1}x{1}x{1}x{1}x{1}x{1}\nrelu")
    assert isinstance(err, LimitError)


# ---------------------------------------------------------------- use ----

FAMILY = """# a family of blocks
param width = 1.0
param depth = 1.0
block mb(c, s=1) = conv1-{make_divisible(c * width)} bn + dwconv3/s bn + conv1-{make_divisible(c * width)} bn none
block stage(c, n, s) = mb(c, s) + mb(c) x{ceil(n * depth)}
use "common.cnn"
"""
COMMON = "block head(n) = gap | fc{n}\n"
NETWORK = 'use "families/eff.cnn"\nparam res = 32\ninput {res}x{res}x3\nconv3-16/2 bn | stage(16, 1, 1) | stage(24, 2, 2) | head(10)\n'
INLINE = ("param width = 1.0\nparam depth = 1.0\n" + FAMILY.split("\n", 3)[3].replace('use "common.cnn"\n', "")
          + COMMON + NETWORK.split("\n", 1)[1])


@pytest.fixture
def zoo(tmp_path):
    (tmp_path / "families").mkdir()
    (tmp_path / "families" / "eff.cnn").write_text(FAMILY)
    (tmp_path / "families" / "common.cnn").write_text(COMMON)
    (tmp_path / "b0.cnn").write_text(NETWORK)
    return tmp_path


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_spec_uses_a_family(zoo):
    g = cnndsl.compile(zoo / "b0.cnn")
    assert g.dump() == cnndsl.compile_text(INLINE).dump()
    assert cnndsl.compile_text(NETWORK, base=zoo).dump() == g.dump()
    assert cnndsl.compile(str(zoo / "b0.cnn"), overrides={"width": 2, "res": 64}).dump() == \
        cnndsl.compile_text(INLINE, overrides={"width": 2, "res": 64}).dump()
    # nodes a used block made point at its call in the spec
    call = NETWORK.splitlines()[3].index("stage(16") + 1
    assert {(n.span.line, n.span.column) for n in g.nodes if n.name.startswith("stage2.")} == {(4, call)}
    assert all(n.span.start < len(NETWORK) for n in g.nodes)


def test_replayed_calls_of_a_used_block_point_at_their_own_call(zoo, monkeypatch):
    write(zoo / "twice.cnn", 'use "families/eff.cnn"\ninput 16x16x8\nstage(8, 1, 1)\n| stage(8, 1, 1)\n| x: stage(8, 1, 1)')
    replayed = cnndsl.compile(zoo / "twice.cnn")
    assert {n.span.line for n in replayed.nodes[1:]} == {3, 4, 5}
    assert all(n.span.line == {"stage1": 3, "stage2": 4, "x": 5}[n.stage] for n in replayed.nodes[1:])
    monkeypatch.setattr("cnndsl.frontend.lower._Lowering.replay_calls", False)
    fresh = cnndsl.compile(zoo / "twice.cnn")
    assert [(n.name, n.span) for n in replayed.nodes] == [(n.name, n.span) for n in fresh.nodes]


def test_a_spec_param_replaces_the_familys(zoo):
    write(zoo / "b1.cnn", NETWORK.replace("param res = 32", "param res = 32\nparam width = 2.0"))
    assert cnndsl.compile(zoo / "b1.cnn").same_as(cnndsl.compile(zoo / "b0.cnn", overrides={"width": 2.0}))


def test_used_files_are_read_once_and_relative_to_their_user(tmp_path):
    write(tmp_path / "a" / "x.cnn", 'use "../b/y.cnn"\nuse "z.cnn"\nblock x = relu')
    write(tmp_path / "a" / "z.cnn", 'use "../b/y.cnn"\nblock z = y')
    write(tmp_path / "b" / "y.cnn", "block y = conv3-4")
    write(tmp_path / "net.cnn", 'use "a/x.cnn"\nuse "b/y.cnn"\ninput 8x8x3\nx + y + z')
    g = cnndsl.compile(tmp_path / "net.cnn")
    assert [n.op for n in g.nodes[1:]] == ["relu", "conv", "relu", "conv", "relu"]


@pytest.mark.parametrize("path", SPECS, ids=SPEC_IDS)
def test_a_used_files_spans_move_and_nothing_else(path):
    from cnndsl.errors import Span
    from cnndsl.frontend.uses import USED, shift
    tree = cnndsl.parse(path.read_text() + "\nconv3-4[] + relu[]")
    moved = shift(tree, 3 * USED)
    pairs, spans = [(tree, moved)], 0
    while pairs:
        a, b = pairs.pop()
        assert type(a) is type(b)
        if isinstance(a, Span):
            assert b == a._replace(start=a.start + 3 * USED, end=a.end + 3 * USED)
            spans += 1
        elif isinstance(a, tuple):
            assert len(a) == len(b)
            pairs.extend(zip(a, b))
            if hasattr(a, "span") and not hasattr(a, "_fields"):        # Options: a tuple with a span
                pairs.append((a.span, b.span))
        else:
            assert a == b
    assert spans > 10


def test_an_error_in_a_used_file_points_into_it(zoo, cli):
    write(zoo / "families" / "broken.cnn", "block fine = relu\nblock b(c) = conv3-c + maxpol\n")
    spec = write(zoo / "bad.cnn", 'use "families/broken.cnn"\ninput 8x8x3\nfine + b(4)')
    with pytest.raises(NameError_) as info:
        cnndsl.compile(spec)
    err = info.value
    assert err.filename == str(zoo / "families" / "broken.cnn") and (err.line, err.column) == (2, 24)
    result = cli("check", str(spec))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"{zoo / 'families' / 'broken.cnn'}:2:24: error: unknown layer 'maxpol'", result.output
    assert lines[1] == "   2 | block b(c) = conv3-c + maxpol" and lines[2] == "     |                        ^~~~~~"
    assert lines[3] == f"  note: in block 'b' called at {spec}:3:8"
    write(zoo / "families" / "broken.cnn", "block b(c) = conv3-c +\n")
    err = pytest.raises(SyntaxError_, cnndsl.compile, spec).value
    assert err.filename == str(zoo / "families" / "broken.cnn") and err.line == 1


def test_duplicates_across_files_name_both(zoo):
    write(zoo / "dup.cnn", 'use "families/common.cnn"\nblock head(n) = fc{n}\nrelu')
    err = pytest.raises(NameError_, cnndsl.compile, zoo / "dup.cnn").value
    assert (err.filename, err.line, err.column) == (str(zoo / "dup.cnn"), 2, 7)
    assert f"first defined at {zoo / 'families' / 'common.cnn'}:1:1" in err.hint
    write(zoo / "families" / "w.cnn", "param width = 3")
    write(zoo / "dup2.cnn", 'use "families/eff.cnn"\nuse "families/w.cnn"\nrelu')
    err = pytest.raises(NameError_, cnndsl.compile, zoo / "dup2.cnn").value
    assert err.filename == str(zoo / "families" / "w.cnn") and "param 'width' is declared twice" in err.message
    assert "eff.cnn:2:7" in err.hint


@pytest.mark.parametrize("files, spec, where, words", [
    ({"c1.cnn": 'use "c2.cnn"', "c2.cnn": 'use "spec.cnn"'}, 'use "c1.cnn"\nrelu', ("c2.cnn", 1, 1),
     "cycle: {d}/spec.cnn -> {d}/c1.cnn -> {d}/c2.cnn -> {d}/spec.cnn"),
    ({"self.cnn": 'use "self.cnn"'}, 'use "self.cnn"\nrelu', ("self.cnn", 1, 1), "self.cnn -> {d}/self.cnn"),
    ({}, 'use "spec.cnn"\nrelu', ("spec.cnn", 1, 1), "cycle"),
    ({}, 'use "/etc/passwd"\nrelu', ("spec.cnn", 1, 5), "relative to the file that uses it"),
    ({}, 'use "~/x.cnn"\nrelu', ("spec.cnn", 1, 5), "relative to the file that uses it"),
    ({}, 'use "../outside.cnn"\nrelu', ("spec.cnn", 1, 5), "outside the spec's folder"),
    ({"sub/a.cnn": 'use "../../outside.cnn"'}, 'use "sub/a.cnn"\nrelu', ("sub/a.cnn", 1, 5), "outside"),
    ({}, 'use "missing.cnn"\nrelu', ("spec.cnn", 1, 5), "cannot read 'missing.cnn': No such file"),
    ({"folder/x.cnn": ""}, 'use "folder"\nrelu', ("spec.cnn", 1, 5), "not a regular file"),
    ({"net.cnn": "relu"}, 'use "net.cnn"\nrelu', ("net.cnn", 1, 1), "only block, param and use statements"),
    ({"in.cnn": "input 8x8x3"}, 'use "in.cnn"\nrelu', ("in.cnn", 1, 1), "holds an input line"),
    ({"act.cnn": "activation tanh"}, 'use "act.cnn"\nrelu', ("act.cnn", 1, 1), "an activation line"),
    ({"bin.cnn": "block a = relu\n\x00\x01"}, 'use "bin.cnn"\nrelu', ("bin.cnn", 2, 1), "binary"),
    ({}, 'use ""\nrelu', ("spec.cnn", 1, 5), "an empty file name"),
    ({}, 'use "caf\u00e9.cnn"\nrelu', ("spec.cnn", 1, 9), "U+00E9"),
    ({}, 'use "a\\\\b.cnn"\nrelu', ("spec.cnn", 1, 7), "a backslash"),
    ({}, 'use "a\tb.cnn"\nrelu', ("spec.cnn", 1, 7), "control character"),
    ({}, 'use families/x.cnn\nrelu', ("spec.cnn", 1, 5), "expected a quoted file name"),
    ({}, 'use "x.cnn\nrelu', ("spec.cnn", 1, 5), "unexpected character"),
])
def test_use_errors(tmp_path, files, spec, where, words):
    (tmp_path / "outside.cnn").write_text("block o = relu")
    d = tmp_path / "d"
    for name, text in files.items():
        write(d / name, text)
    path = write(d / "spec.cnn", spec)
    start = time.perf_counter()
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.compile(path)
    err = info.value
    assert (err.filename, err.line, err.column) == (str(d / where[0]), where[1], where[2]), err.render()
    assert words.format(d=d) in err.render(), err.render()
    assert "^" in err.render() and time.perf_counter() - start < 5


def test_use_nests_at_most_16_deep(tmp_path):
    for i in range(20):
        write(tmp_path / f"f{i}.cnn", f'use "f{i + 1}.cnn"\nblock b{i} = relu' if i < 19 else "block b19 = relu")
    write(tmp_path / "ok.cnn", 'use "f4.cnn"\nb4 + b19')
    assert len(cnndsl.compile(tmp_path / "ok.cnn").nodes) == 3
    write(tmp_path / "deep.cnn", 'use "f0.cnn"\nb0')
    err = pytest.raises(LimitError, cnndsl.compile, tmp_path / "deep.cnn").value
    assert "more than 16 files deep" in err.message and err.filename == str(tmp_path / "f15.cnn")


def test_use_is_bounded(tmp_path):
    big = write(tmp_path / "big.cnn", "")
    with open(big, "wb") as f:
        f.truncate(4 * limits.MAX_SOURCE_CHARS + 10)        # sparse: refused without being read whole
    write(tmp_path / "spec.cnn", 'use "big.cnn"\nrelu')
    start = time.perf_counter()
    err = pytest.raises(LimitError, cnndsl.compile, tmp_path / "spec.cnn").value
    assert "larger than" in err.message and time.perf_counter() - start < 5
    for i in range(3):
        write(tmp_path / f"half{i}.cnn", "block b%d = relu\n" % i + "# " + "x" * 400_000 + "\n")
    write(tmp_path / "many.cnn", 'use "half0.cnn"\nuse "half1.cnn"\nuse "half2.cnn"\nrelu')
    err = pytest.raises(LimitError, cnndsl.compile, tmp_path / "many.cnn").value
    assert "1,000,000 characters" in err.message and (err.line, err.column) == (3, 1)
    for i in range(70):
        write(tmp_path / "wide" / f"w{i}.cnn", f"block w{i} = relu")
    write(tmp_path / "wide" / "spec.cnn", "\n".join(f'use "w{i}.cnn"' for i in range(70)) + "\nrelu")
    err = pytest.raises(LimitError, cnndsl.compile, tmp_path / "wide" / "spec.cnn").value
    assert "more than 64 files" in err.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_use_of_a_pipe_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.cnn")
    write(tmp_path / "spec.cnn", 'use "pipe.cnn"\nrelu')
    err = pytest.raises(ValueError_, cnndsl.compile, tmp_path / "spec.cnn").value
    assert "not a regular file" in err.message


def test_use_never_follows_a_link_out(tmp_path):
    secret = write(tmp_path / "secret.txt", "TOP-SECRET-LINE\n")
    write(tmp_path / "d" / "spec.cnn", 'use "link.cnn"\nrelu')
    (tmp_path / "d" / "link.cnn").symlink_to(secret)
    with pytest.raises(ValueError_) as info:
        cnndsl.compile(tmp_path / "d" / "spec.cnn")
    assert "outside the spec's folder" in info.value.message
    assert "TOP-SECRET" not in info.value.render()
    # a link that stays inside is fine
    write(tmp_path / "d" / "real" / "f.cnn", "block f = relu")
    (tmp_path / "d" / "inside.cnn").symlink_to(tmp_path / "d" / "real" / "f.cnn")
    write(tmp_path / "d" / "spec2.cnn", 'use "inside.cnn"\nf')
    assert len(cnndsl.compile(tmp_path / "d" / "spec2.cnn").nodes) == 2


def test_text_has_no_folder_unless_given_one(zoo):
    err = refused(NETWORK)
    assert isinstance(err, ValueError_) and (err.line, err.column) == (1, 1) and "has none" in err.message
    assert "base=" in err.hint
    write(zoo / "brackets(1)#.cnn", "block q = relu")      # brackets and '#' in a file name are not syntax
    assert len(cnndsl.compile_text('use "brackets(1)#.cnn"\nq', base=zoo).nodes) == 2


# ---------------------------------------------------------------- the command line ----

def test_set_on_every_command(zoo, cli, tmp_path):
    spec = str(zoo / "b0.cnn")
    result = cli("check", spec, "--set", "width=2", "--set", "res=64", "--set", "depth=2")
    assert result.exit_code == 0 and "ok" in result.output
    want = cnndsl.compile(spec, overrides={"width": 2, "res": 64, "depth": 2})
    result = cli("ir", spec, "--set", "width=2", "--set", "res=64", "--set", "depth=2")
    assert result.exit_code == 0 and result.output.strip() == want.dump().strip()
    result = cli("analyze", "--json", spec, "--set", "res=64", "--set", "width=2", "--set", "depth=2")
    assert result.exit_code == 0
    import json
    assert json.loads(result.output)["totals"]["params"] == cnndsl.analyze(want).totals["params"]
    out = tmp_path / "net.py"
    result = cli("build", "--target", "torch", spec, "-o", str(out), "--set", "width=0.5")
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize("args, code, words", [
    (["--set", "widht=2"], 1, "did you mean 'width'? the spec's params are: width, depth, res"),
    (["--set", "width=abc"], 2, "the value of 'width' must be a number"),
    (["--set", "width=nan"], 2, "must be a number"),
    (["--set", "width=1e400"], 2, "finite number"),
    (["--set", "width=1", "--set", "width=2"], 2, "'width' is set twice"),
    (["--set", "width"], 2, "expected NAME=VALUE"),
    (["--set", "=2"], 2, "expected NAME=VALUE"),
    (["--set", "width=0x10"], 2, "must be a number"),
    (["--set", "res=0"], 1, "input sizes must be at least 1"),
])
def test_set_errors(zoo, cli, args, code, words):
    result = cli("analyze", str(zoo / "b0.cnn"), *args)
    assert result.exit_code == code and words in result.output, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_standard_input_has_no_folder(zoo, cli):
    result = cli("check", "-", input=NETWORK)
    assert result.exit_code == 1 and result.output.startswith("<stdin>:1:1: error: 'use' needs the folder")
    result = cli("check", "-", "--set", "a=1", input="param a = 2\nrelu")
    assert result.exit_code == 0


def test_fmt_prints_the_new_syntax(zoo, cli, tmp_path):
    texts = [NETWORK, "param a = 1\nrelu", "relu\nconv3-{ceil(2.5)} x 2", "param c = 3\ninput {4}x4x{c}\nrelu",
             "block e1 = conv3-8 x 2\nblock b(w2) = conv3-{w2*2}[groups={w2/2}]\ne1 + b(2) + incep3a\nblock incep3a = relu",
             "input 8x8x4\ndwconv(3, stride=2, nobias) + conv3-{make_divisible(v=3, min_value=none)} + cat(identity, relu)"]
    for i, text in enumerate(texts):
        path = write(zoo / f"f{i}.cnn", text)
        result = cli("fmt", str(path))
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
        if result.exit_code == 0:
            assert cnndsl.compile_text(result.output, base=zoo).same_as(cnndsl.compile(path)), result.output
        else:           # a printer that does not know a statement yet says so, at it
            assert result.output.startswith(f"{path}:") and "internal error" not in result.output


# ---------------------------------------------------------------- fuzz ----

TOKENS = ["conv3-8", "fc10", "relu", "e1", "incep3a", "w2", "x 2", "x", "0", ".5", "e", "conv", "\u00d7 3", "x2", "+", "|", "(", ")", "{", "}",
          "[", "]", ",", "=", "-", "*", "/", "block e1 = ", "block b(w2, c=1) = ", "b(2)", "param w = 2\n",
          "param res = 8\n", "input {res}x{res}x3\n", 'use "x.cnn"\n', "use", "param", "ceil(", "floor(", "round(",
          "min(", "max(", "make_divisible(", "divisor=", "min_value=none", "none", "identity", "cat(", "add(",
          "res(", "res", "dwconv(3, stride=2, nobias)", "conv(3, 8, valid)", "nobias", "[groups={w/2}]", "\n",
          "1e400", "0.5", "3x3", "fc1", "Max_Pool2", "c2-1", '"', "#"]


def _only_our_errors(text: str, tmp_path) -> None:
    for fn in (lambda t: cnndsl.compile_text(t, base=tmp_path), cnndsl.format_spec):
        try:
            result = fn(text)
        except cnndsl.CnnDslError as e:
            assert e.render()
            assert e.span is not None or "cannot set" in e.message or "use" in e.message, (text, e.render())
            continue
        if fn is cnndsl.format_spec:
            assert cnndsl.format_spec(result) == result, (text, result)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=16), st.sampled_from(["", " "]))
def test_fuzz_new_syntax_raises_only_cnndsl_errors(tmp_path_factory, tokens, sep):
    folder = tmp_path_factory.getbasetemp() / "fuzz-zoo"
    if not folder.exists():
        write(folder / "x.cnn", "block xb = relu\nparam q = 1")
    _only_our_errors(sep.join(tokens), folder)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("e1w2x ()={},+|-*/.\"\n") + ["ceil", "max", "param ", "use ", "block ", "\u00d7",
                                                                  "res", "none"]), max_size=40).map("".join))
def test_fuzz_characters_raise_only_cnndsl_errors(tmp_path_factory, text):
    _only_our_errors(text, tmp_path_factory.getbasetemp())
