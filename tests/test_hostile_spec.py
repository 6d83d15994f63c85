"""Hostile specs: every attack ends in a CnnDslError with a span (never another exception), fast and in bounded memory.

The classes of attack: NaN and infinities, Python recursion, names that collide, look-alike (non-ASCII)
characters, and sizes that would make the compiler loop or allocate without bound.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import limits
from cnndsl.cli import main
from cnndsl.ir import Graph, make_node
from cnndsl.errors import LimitError, NameError_, SyntaxError_, ValueError_
from cnndsl.frontend.syntax import BlockDef, InputStmt, Labeled, Pipeline
from cnndsl.ir.ops import OPS, LayerArgs, OpError, adaptive_window, widest_adaptive_window
from conftest import ROOT
from strategies import compiles
from strategies import spec as random_spec


def _sum(terms: int) -> str:
    return "+".join(["1"] * terms)


def _nested_calls(blocks: int, depth: int) -> str:
    """`blocks` blocks, each nesting `depth` labelled residuals around a call of the next one."""
    names = [f"blk{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(blocks)]
    lines = ["input 8x8x3"]
    for i, name in enumerate(names):
        body = f"{names[i + 1]}()" if i + 1 < len(names) else "relu"
        for d in range(depth):
            body = f"l{d}: res(relu + {body})"
        lines.append(f"block {name}() = {body}")
    lines.append(f"{names[0]}()")
    return "\n".join(lines)


# (id, spec text, error class, line, column, words the message must contain)
HOSTILE = [
    # -- NaN and infinities: literals that overflow, arithmetic that leaves the finite numbers
    ("inf-literal-bn", "bn[eps=1e400*0]", LimitError, 1, 8, "too large to represent"),
    ("inf-literal-slope", "leakyrelu[slope=1e400-1e400]", LimitError, 1, 17, "too large to represent"),
    ("inf-literal-dropout", "dropout[p=1e400-1e400]", LimitError, 1, 11, "too large to represent"),
    ("inf-literal-lead", "dropout1e400", LimitError, 1, 8, "too large to represent"),
    ("inf-literal-size", "input 8x8x3\nconv3-{1e400}", LimitError, 2, 8, "too large to represent"),
    ("zero-literal", "bn[eps=1e-400]", ValueError_, 1, 8, "would be read as 0"),
    ("inf-mul", "bn[eps=1e300*1e300*0]", ValueError_, 1, 8, "not a finite number"),
    ("inf-sub", "leakyrelu[slope=1e308*10-1e308*10]", ValueError_, 1, 17, "not a finite number"),
    ("inf-paren", "dropout[p=(1e308+1e308)*0]", ValueError_, 1, 12, "not a finite number"),
    ("inf-div", "lrn[alpha=1/1e-320]", ValueError_, 1, 11, "not a finite number"),
    ("inf-repeat", "conv3-4 x{1e308*10}", ValueError_, 1, 11, "not a finite number"),
    ("inf-default", "block b(c=1e308*10) = conv3-c\nb()", ValueError_, 1, 11, "not a finite number"),
    ("inf-argument", "block b(c) = conv3-c\nb(1e308*10)", ValueError_, 2, 3, "not a finite number"),
    ("inf-activation", "activation leakyrelu[slope=1e308*10*0]\nconv3-4", ValueError_, 1, 28, "not a finite number"),
    ("inf-augment", "augment crop=1e308*10\nconv3-4", ValueError_, 1, 14, "not a finite number"),
    ("inf-stride", "conv3-4[stride=1e308*10]", ValueError_, 1, 16, "not a finite number"),
    ("underflow-mul", "conv3-{1e-200*1e-200 + 4}", ValueError_, 1, 8, "too small to represent"),
    ("nan-div", "conv3-4 x{0.0/0}", ValueError_, 1, 15, "division by zero"),
    ("huge-int", "input 8x8x3\nconv3-{99999999*99999999}", LimitError, 2, 8, "absurdly large"),
    ("long-float", "dropout[p=0." + "1" * 31 + "]", LimitError, 1, 11, "33 characters"),
    # -- recursion: expressions and nesting driven by the input
    ("sum-1000", "conv3-{" + _sum(1000) + "}", LimitError, 1, 8, "operators deep"),
    ("sum-100k", "conv3-{" + _sum(100_000) + "}", LimitError, 1, 8, "operators deep"),
    ("neg-100k", "conv3-{" + "-" * 100_000 + "4}", LimitError, 1, 100_008 - (limits.MAX_EXPR_DEPTH + 1),
     "operators deep"),
    ("product-chain", "bn[eps=" + "*".join(["1"] * 5000) + "]", LimitError, 1, 8, "operators deep"),
    ("calls-x-nesting", _nested_calls(31, 30), LimitError, 5, 138, "levels deep"),
    ("calls-x-labels", "input 8x8x3\n" + "\n".join(
        f"block b{chr(97 + k // 26)}{chr(97 + k % 26)}() = " + "".join(f"l{i}: (" for i in range(60))
        + (f"b{chr(97 + (k + 1) // 26)}{chr(97 + (k + 1) % 26)}()" if k < 31 else "relu") + ")" * 60
        for k in range(32)) + "\nbaa()", LimitError, 5, 125, "levels deep"),
    # -- names that collide
    ("stage-label-twice", "input 8x8x3\na: conv3-4 | a: conv3-4", NameError_, 2, 14, "two stages are labelled 'a'"),
    ("stage-label-input", "input 8x8x3\ninput: conv3-4", NameError_, 2, 1, "'input' is already used"),
    ("repeat-suffix", "input 8x8x3\na_2: relu + (a: relu) x2", NameError_, 2, 14, "'a_2' is already used"),
    ("label-suffix", "input 8x8x3\n(a: relu) x2 + a_2: relu", NameError_, 2, 16, "'a_2' is already used"),
    ("res-add-label", "res(add: conv3-8 + conv3-8)", NameError_, 1, 5, "the label 'add' is taken"),
    ("res-proj-label", "input 8x8x8\nres(proj: conv3-8/2 + conv3-16)", NameError_, 2, 5, "the label 'proj' is taken"),
    ("res-proj-bn-label", "input 8x8x3\nres(proj_bn: conv3-8/2 bn + conv3-16 bn)", NameError_, 2, 5,
     "the label 'proj_bn' is taken"),
    ("block-proj-label", "input 8x8x3\nblock r(c) = res(conv3-c/2 bn + proj: conv3-c bn)\nr(8)", NameError_, 2, 33,
     "'r1.proj'"),
    # -- look-alike characters: names and numbers are ASCII
    ("long-s-block", "block \u017fb(c) = conv3-c\nblock sb(c) = conv3-c\n\u017fb(3) + sb(3)", SyntaxError_, 1, 7,
     "U+017F LATIN SMALL LETTER LONG S"),
    ("kelvin-block", "block blc\u212a(c) = conv3-c\nblc\u212a(3)", SyntaxError_, 1, 10, "U+212A KELVIN SIGN"),
    ("dotless-i-keyword", "\u0131nput 8x8x3\nconv3-4", SyntaxError_, 1, 1, "DOTLESS I"),
    ("dotted-I-keyword", "\u0130NPUT 8x8x3\nconv3-4", SyntaxError_, 1, 1, "U+0130"),
    ("arabic-digit", "conv\u0663-64", SyntaxError_, 1, 5, "ARABIC-INDIC DIGIT THREE"),
    ("fullwidth-digit", "conv3-\uff16\uff14", SyntaxError_, 1, 7, "FULLWIDTH DIGIT SIX"),
    ("label-accent", "input 8x8x3\ncaf\u00e9: conv3-4", SyntaxError_, 2, 4, "U+00E9"),
    ("nbsp", "conv3-64\u00a0+ relu", SyntaxError_, 1, 9, "NO-BREAK SPACE"),
    ("repeat-fullwidth", "conv3-4 x\uff12", SyntaxError_, 1, 10, "FULLWIDTH DIGIT TWO"),
    ("line-separator", "conv3-4 # comment\u2028more\nrelu", SyntaxError_, 1, 18, "control or invalid character"),
    # -- sizes
    ("adaptive-too-big", "input 64x64x3\nadaptiveavgpool1048577x1", LimitError, 2, 16, "beyond the limit"),
    ("lrn-too-big", "input 8x8x3\nlrn4097", LimitError, 2, 4, "beyond the limit"),
    ("kernel-too-big", "input 8x8x3\nconv4097-4", LimitError, 2, 5, "beyond the limit"),
    ("repeat-too-big", "conv3-4 x100001", LimitError, 1, 9, "beyond the limit"),
    ("steps-empty-repeats", "((none x1000) x1000) x1000", LimitError, 1, 3, "steps to lower"),
    ("steps-empty-calls", "block e() = none\n((e() x1000) x1000) x1000", LimitError, 2, 3, "steps to lower"),
    ("steps-arguments", "block b(c) = none\n(b(" + "+".join(["(1+1+1+1+1+1+1+1)"] * 150) + ") x1000) x100",
     LimitError, 2, 5, "steps to lower"),
    ("concat-channels", "input 8x8x3\ncat(conv1-1048576, conv1-1048576)", LimitError, 2, 1, "1,048,576"),
    ("options", "conv3-4[" + ", ".join(["valid"] * 33) + "]", LimitError, 1, 8, "33 options"),
    ("options-quadratic", "conv3-4[" + ", ".join(["valid"] * 32) + "]", NameError_, 1, 16, "given twice"),
    ("params", "block b(" + ", ".join(f"p{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(65)) + ") = relu\nrelu",
     LimitError, 1, 7, "65 block parameters"),
    ("arguments", "block b(c) = relu\nb(" + ", ".join(["1"] * 65) + ")", LimitError, 2, 1, "65 arguments"),
    ("dims", "input 1x1x1x1x1x1x1x1x1\nconv3-4", LimitError, 1, 7, "9 parts"),
    ("name-length", "block " + "a" * 129 + "() = relu\nrelu", LimitError, 1, 7, "129 characters"),
    ("label-length", "b" * 129 + ": relu", LimitError, 1, 1, "130 characters"),
    ("derived-padding", "conv5-8[dilation=4096]", LimitError, 1, 9, "needs padding 8,192"),
    ("derived-padding-2d", "conv1x5-8[dilation=1x2049]", LimitError, 1, 11, "needs padding 4,098"),
    ("padding-grows-map", "input 1048576x1x1\nconv1-1[pad=4096]", LimitError, 2, 1, "beyond the limit of 1,048,576"),
    ("padding-grows-map-repeated", "input 8x8x3\nconv1-1[pad=4096] x200", LimitError, 2, 1, "1x1048584x1048584"),
    ("projection-stride", "input 8192x8192x3\nres(maxpool4096/4096 + maxpool2)", LimitError, 2, 1,
     "automatic projection from 3x8192x8192 to 3x1x1: stride 8,192 is beyond the limit"),
    # -- what is written is what is built: no option quietly overrides another, no value is rounded away
    ("same-with-pad-end", "input 8x8x3\nconv3-8[same, pad_end=1]", NameError_, 2, 15, "pad_end given with 'same'"),
    ("pool-end-beyond-kernel", "input 8x8x3\nmaxpool3/2[pad_end=3]", ValueError_, 2, 12,
     "not smaller than the kernel 3"),
    ("pool-uneven-ceil", "input 8x8x3\nmaxpool3/2[pad_end=1, ceil]", ValueError_, 2, 12, "ceil mode with padding"),
    ("activation-twice", "activation tanh\nconv3-8\nactivation relu", ValueError_, 3, 1,
     "activation given twice: first given at 1:1"),
    ("augment-twice", "augment flip\nconv3-8\naugment crop=4", ValueError_, 3, 1, "augment given twice: first given at 1:1"),
    ("augment-part-twice", "augment flip, crop=2, flip\nconv3-8", ValueError_, 1, 23, "'flip' given twice: first given at 1:9"),
    ("augment-preset-in-list", "augment standard, flip\nconv3-8", ValueError_, 1, 9, "preset 'standard'"),
    ("augment-subnormal", "augment flip, crop=1e-300\nconv3-8", ValueError_, 1, 15, "too small for float32"),
    ("bias-and-nobias", "conv3-8[bias=true, nobias]", NameError_, 1, 20, "bias given twice"),
    ("nobias-and-bias", "conv3-8[nobias, bias=false]", NameError_, 1, 17, "bias given twice"),
    ("fc-bias-and-nobias", "fc10[nobias, bias]", NameError_, 1, 14, "bias given twice"),
    ("lrn-size-twice", "lrn5[size=3]", NameError_, 1, 6, "lrn size given twice"),
    ("dropout-rate-twice", "dropout0.3[p=0.5]", NameError_, 1, 12, "dropout rate given twice"),
    ("dropout-call-twice", "dropout(0.3, rate=0.5)", NameError_, 1, 1, "dropout rate given twice"),
    ("call-keyword-twice", "conv(3, 8, pad=1, PAD=2)", NameError_, 1, 19, "option 'pad' given twice"),
    ("dwconv-groups", "input 8x8x4\ndwconv3[groups=2]", ValueError_, 2, 9, "dwconv is depthwise"),
    ("bn-eps-float32-zero", "bn[eps=1e-300]", ValueError_, 1, 4, "eps must be in [1e-12, 1]"),
    ("bn-eps-zero", "bn[eps=0]", ValueError_, 1, 4, "eps must be in [1e-12, 1]"),
    ("bn-momentum-subnormal", "bn[momentum=1e-40]", ValueError_, 1, 4, "too small for float32"),
    ("slope-subnormal", "leakyrelu[slope=-1e-39]", ValueError_, 1, 11, "too small for float32"),
    ("elu-subnormal-arithmetic", "elu[alpha=1e-20*1e-20]", ValueError_, 1, 5, "too small for float32"),
    ("lrn-subnormal", "lrn[alpha=1e-45]", ValueError_, 1, 5, "too small for float32"),
    ("dropout-rounds-to-1", "dropout[p=0.99999999999]", ValueError_, 1, 9, "becomes 1.0 in float32"),
    ("bom-inside", "conv3-8 +\ufeff relu", SyntaxError_, 1, 10, "U+FEFF"),
]
IDS = [case[0] for case in HOSTILE]


@pytest.mark.parametrize("name,text,cls,line,col,words", HOSTILE, ids=IDS)
def test_hostile_spec_is_refused_with_a_span(name, text, cls, line, col, words):
    start = time.perf_counter()
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.compile_text(text, filename="hostile.cnn")
    err = info.value
    assert type(err) is cls, err.render()
    assert err.span is not None and (err.line, err.column) == (line, col), err.render()
    assert words in err.message, err.render()
    rendered = err.render()
    assert rendered.startswith(f"hostile.cnn:{line}:{col}: ") and "^" in rendered
    assert time.perf_counter() - start < 10, "refused, but slowly"


def _parse_time(case) -> bool:
    """Is this case refused by the parser (so `fmt`, which only parses, refuses it too)?"""
    try:
        cnndsl.parse(case[1])
    except cnndsl.CnnDslError:
        return True
    return False


CLI_CASES = [c for c in HOSTILE if len(c[1]) < 5000 and c[0] not in ("steps-empty-repeats", "steps-arguments")]


@pytest.mark.parametrize("name,text,cls,line,col,words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_hostile_spec_through_the_cli(tmp_path, name, text, cls, line, col, words):
    path = tmp_path / "hostile.cnn"
    path.write_text(text, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["analyze", str(path)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"{path}:{line}:{col}: "), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    result = runner.invoke(main, ["fmt", str(path)], catch_exceptions=False)
    if _parse_time((name, text)):
        assert result.exit_code == 1 and result.output.startswith(f"{path}:{line}:{col}: "), result.output
    else:       # fmt only parses: it prints text that parses and gives the same error when compiled
        assert result.exit_code == 0, result.output
        with pytest.raises(cls):
            cnndsl.compile_text(result.output)
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- NaN and inf inside the op rules ----

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("op,args", [
    ("bn", LayerArgs("bn", None, None, None, {"eps": NAN})),
    ("bn", LayerArgs("bn", None, None, None, {"momentum": INF})),
    ("lrn", LayerArgs("lrn", None, None, None, {"alpha": NAN})),
    ("lrn", LayerArgs("lrn", None, None, None, {"beta": -INF})),
    ("lrn", LayerArgs("lrn", NAN, None, None, {})),
    ("dropout", LayerArgs("dropout", NAN, None, None, {})),
    ("dropout", LayerArgs("dropout", None, None, None, {"p": NAN})),
    ("leakyrelu", LayerArgs("leakyrelu", None, None, None, {"slope": NAN})),
    ("elu", LayerArgs("elu", None, None, None, {"alpha": INF})),
    ("conv", LayerArgs("conv", NAN, 4, None, {})),
    ("conv", LayerArgs("conv", 3, INF, None, {})),
    ("conv", LayerArgs("conv", 3, 4, (NAN, 1), {})),
    ("conv", LayerArgs("conv", 3, 4, None, {"dilation": INF})),
    ("fc", LayerArgs("fc", NAN, None, None, {})),
    ("maxpool", LayerArgs("maxpool", 3, None, NAN, {})),
    ("adaptive_avgpool", LayerArgs("adaptiveavgpool", (NAN, 2), None, None, {})),
])
def test_every_range_check_refuses_nan_and_inf(op, args):
    with pytest.raises(OpError):
        OPS[op].build(args, (4, 8, 8))


def test_widest_adaptive_window_is_exact():
    for size in range(1, 60):
        for count in range(1, 60):
            widest = max(end - start for start, end in (adaptive_window(i, size, count) for i in range(count)))
            assert widest_adaptive_window(size, count) == widest, (size, count)


def test_huge_adaptive_pooling_is_analyzed_at_once():
    start = time.perf_counter()
    report = cnndsl.analyze(cnndsl.compile_text("input 64x64x3\nadaptiveavgpool1048576x1"))
    assert report.graph.output.shape == (3, 1 << 20, 1)
    assert time.perf_counter() - start < 5


# ---------------------------------------------------------------- literals that fmt prints ----

@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_every_finite_float_prints_as_a_literal_that_reads_back(value):
    text = cnndsl.format_spec(f"input 8x8x3\ndropout[p={value!r}]")
    assert len(repr(value)) <= limits.MAX_FLOAT_CHARS
    got = cnndsl.parse(text).statements[1].options[0].value.value
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("literal,value", [("1e-05", 1e-05), ("1e+16", 1e16), ("5e-324", 5e-324),
                                           ("0." + "3" * 30, 0.3333333333333333), ("1.5E3", 1500.0),
                                           (".5", 0.5), ("5.", 5.0), ("2.2250738585072014e-308", 2.2250738585072014e-308),
                                           ("1.7976931348623157e308", 1.7976931348623157e308)])
def test_float_forms_round_trip(literal, value):
    text = f"input 8x8x3\nconv3-4 + lrn[k={literal} / {literal} * 2, alpha=0.5] + bn[momentum={literal} * 0]"
    option = cnndsl.parse(text).statements[1].items[1].options[0]
    assert option.value.left.left.value == value
    printed = cnndsl.format_spec(text)
    assert repr(value) in printed and cnndsl.format_spec(printed) == printed
    g = cnndsl.compile_text(text)
    assert g["lrn1"].attrs["k"] == 2.0
    assert cnndsl.compile_text(printed).same_as(g)


@st.composite
def float_literal(draw, low: float, high: float):
    """A float in [low, high] written any way the FLOAT terminal reads: 0.5, 5e-1, 5.0E-01, .5, 5; 0 or a
    normal float32 (layer options refuse what float32 would turn into a subnormal or 0)."""
    value = draw(st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
                 .filter(lambda v: v == 0 or v >= limits.FLOAT32_TINY))
    form = draw(st.sampled_from(["repr", "e", "E", "f"]))
    if form == "repr":
        text = repr(value)
    elif form in ("e", "E"):
        text = f"{value:.{draw(st.integers(0, 16))}{form}}"
    else:
        text = f"{value:.{draw(st.integers(1, 20))}f}"
    written = float(text)          # a short form may round out of range (1e-10 with one decimal is 0.0)
    if not low <= written <= high or (written != 0 and written < limits.FLOAT32_TINY):
        text = repr(value)
    return text if "." in text or "e" in text.lower() else text + ".0"


@st.composite
def spec_with_floats(draw):
    """A generated spec whose bn, dropout, lrn and activation layers carry float options."""
    text = draw(random_spec())
    lines = text.splitlines()
    body = lines[-1]
    body = re.sub(r"\bbn\b", lambda m: f"bn[eps={draw(float_literal(limits.MIN_BN_EPS, 1))}, "
                  f"momentum={draw(float_literal(0, 1))}]", body)
    body = re.sub(r"\blrn\b", lambda m: f"lrn[alpha={draw(float_literal(0, 1e6))}, k={draw(float_literal(0, 1e6))}]",
                  body)
    body = re.sub(r"\bdropout0\.25\b", lambda m: f"dropout{draw(float_literal(0, 0.999))}", body)
    extra = draw(st.sampled_from(["", f" + leakyrelu[slope={draw(float_literal(0, 1e6))}]",
                                  f" + elu[alpha={draw(float_literal(0, 1e6))}]",
                                  f" + dropout[p={draw(float_literal(0, 0.999))}]"]))
    head, sep, tail = body.partition("\n|")
    return "\n".join(lines[:-1] + [head + extra + sep + tail]) + "\n"


@settings(max_examples=60, deadline=None)
@given(spec_with_floats())
def test_format_round_trip_with_float_options(text):
    original = compiles(text)
    printed = cnndsl.format_spec(text)
    assert cnndsl.compile_text(printed).same_as(original), (text, printed)
    assert cnndsl.format_spec(printed) == printed


def _expressions():
    leaves = st.one_of(st.integers(0, 5).map(str), st.sampled_from(["c", "s", "0.5", "1e-05", "2x2", ".25"]))
    return st.recursive(leaves, lambda e: st.one_of(
        st.tuples(e, st.sampled_from(["+", " - ", "*", "/", "//", "%"]), e).map("".join),
        e.map(lambda x: f"-{x}"), e.map(lambda x: f"({x})")), max_leaves=6)


def _items():
    expr = _expressions()
    size = st.one_of(st.integers(1, 8).map(str), st.sampled_from(["c", "2x2", "1.5"]), expr.map(lambda x: f"{{{x}}}"))
    layer = st.builds(lambda w, lead, sz, stride, opts: w + lead + sz + stride + opts,
                      st.sampled_from(["conv", "CONV", "fc", "maxpool", "bn", "dropout", "lrn", "relu", "x ", "b"]),
                      st.one_of(st.just(""), size), st.one_of(st.just(""), size.map(lambda x: "-" + x)),
                      st.one_of(st.just(""), size.map(lambda x: "/" + x)),
                      st.one_of(st.just(""), st.lists(st.one_of(st.sampled_from(["valid", "ceil"]),
                                                                expr.map(lambda x: f"p={x}")),
                                                      max_size=2).map(lambda o: "[" + ", ".join(o) + "]")))
    call = st.lists(expr, max_size=2).map(lambda args: "b(" + ", ".join(args) + ")")
    return st.recursive(st.one_of(layer, call), lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(" + ".join),
        st.lists(inner, min_size=2, max_size=3).map(" | ".join).map(lambda x: f"({x})"),
        st.lists(inner, min_size=2, max_size=3).map(" ".join),
        inner.map(lambda x: f"({x})"),
        st.tuples(st.sampled_from(["a", "b", "stage2", "conv1", "add"]), inner).map(lambda t: f"{t[0]}: {t[1]}"),
        st.tuples(inner, st.one_of(st.integers(1, 3).map(lambda n: f" x{n}"), expr.map(lambda x: f" x{{{x}}}")))
        .map("".join),
        st.tuples(inner, st.one_of(st.just(""), inner.map(lambda x: ", " + x))).map(lambda t: f"res({t[0]}{t[1]})"),
        st.lists(inner, min_size=2, max_size=3).map(lambda b: "cat(" + ", ".join(b) + ")")), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(_items(), st.sampled_from(["", "input 16x16x4\n"]), st.sampled_from(["", "block b(c=2, s=1) = conv3-c/s\n"]))
def test_format_round_trip_of_random_syntax(body, head, block):
    text = head + block + body
    try:
        cnndsl.parse(text)
    except cnndsl.CnnDslError as e:
        assert e.span is not None
        return
    printed = cnndsl.format_spec(text)
    assert cnndsl.format_spec(printed) == printed, (text, printed)
    try:
        original = cnndsl.compile_text(text)
    except cnndsl.CnnDslError as e:
        with pytest.raises(type(e)):
            cnndsl.compile_text(printed)
        return
    assert cnndsl.compile_text(printed).same_as(original), (text, printed)


# ---------------------------------------------------------------- recursion ----

def test_expressions_at_the_depth_limit_work():
    depth = limits.MAX_EXPR_DEPTH
    g = cnndsl.compile_text("input 8x8x3\nconv3-{" + _sum(depth + 1) + "}")          # depth operators
    assert g["conv1"].attrs["out"] == depth + 1
    g = cnndsl.compile_text("input 8x8x3\nconv3-{" + "-" * depth + "4}")
    assert g["conv1"].attrs["out"] == 4
    assert cnndsl.format_spec("conv3-{" + "- " * depth + "4}") == "conv3-{" + "-" * depth + "4}\n"
    with pytest.raises(LimitError):
        cnndsl.compile_text("input 8x8x3\nconv3-{" + _sum(depth + 2) + "}")


def test_wide_expressions_are_evaluated_without_recursion():
    terms = ["1"] * 40_000      # a balanced sum: 40,000 terms, 16 levels of brackets
    while len(terms) > 1:
        terms = [f"({terms[i]}+{terms[i + 1]})" if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    g = cnndsl.compile_text("input 8x8x3\nconv1-{" + terms[0] + "}")
    assert g["conv1"].attrs["out"] == 40_000
    assert cnndsl.format_spec("conv1-{" + terms[0] + "}").count("+") == 39_999


def test_deepest_legal_nesting_lowers_and_formats():
    # 64 brackets, each a label around a repeat of a sequence: the lowering's depth limit is not reached
    text = "input 8x8x3\n" + "".join(f"l{i}: (relu + " for i in range(60)) + "relu" + ") x1" * 60
    g = cnndsl.compile_text(text)
    assert len(g.nodes) == 62
    assert cnndsl.compile_text(cnndsl.format_spec(text)).same_as(g)


def test_lowering_never_reaches_pythons_recursion_limit():
    # the worst nesting the limits allow, compiled with little stack to spare: refused as a LimitError
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(__import__("inspect").stack()) + 150)
    try:
        with pytest.raises(LimitError) as info:
            cnndsl.compile_text(_nested_calls(31, 30))
    finally:
        sys.setrecursionlimit(limit)
    assert info.value.span is not None


# ---------------------------------------------------------------- names ----

def _module_path_clashes(graph) -> list:
    """Nodes that would share a module path (stage, scope..., name), where a first name part equal to the
    node's stage stands for the stage (as in names.module_paths): `T.x` beside a top-level `x` in stage T."""
    seen: dict[tuple, str] = {}
    clashes = []
    for n in graph.nodes[1:]:
        parts = tuple(n.name.split("."))
        path = parts if len(parts) > 1 and parts[0] == n.stage else (n.stage, *parts)
        if path in seen:
            clashes.append((seen[path], n.name))
        seen[path] = n.name
    return clashes


COLLIDING = [
    "input 8x8x3\nconv3-4 | conv3-4 | stage3: (conv3-4) | conv3-4",
    "input 8x8x3\nconv3-4 | conv3-4 | stage4: (conv3-4 + conv3-4) | conv3-4",
    "input 8x8x3\nstage1: conv3-4 | conv3-4 | stage2: (conv3-4 + conv3-4)",
    "input 8x8x3\nblock stage(c) = conv3-c + conv3-c\nconv3-4 + stage(4)",
    "input 8x8x3\nconv3-4 + stage1: (conv3-4 + conv3-4)",
    "input 8x8x3\nblock stage(c) = conv3-c\nstage(4) | stage(4) + conv3-4 | conv3-4 + stage(4) | stage(4) x2",
    "input 8x8x3\nconv3-4 + conv1: conv3-4",
    "input 8x8x3\nblock b() = conv3-4\nb() + b1: conv3-4",
    "input 8x8x3\n(relu6: relu6) x2 + conv3-4 relu6",
    "input 8x8x3\nconv3-4 relu6 + relu6_1: relu",
    "input 8x8x3\nblock r(c) = res(add: conv3-c + conv3-c)\nr(3)",
    "input 8x8x3\nx: cat(b1: conv1-4, conv1-4) + b1: conv3-4",
    "input 8x8x3\ng: (conv3-4 + g: conv3-4)",
    "input 8x8x3\nhead: conv3-4 | head2: (conv3-4 + head: relu)",
    "input 8x8x3\nres1: conv3-3 + res(conv3-3)",
]


@pytest.mark.parametrize("text", COLLIDING)
def test_labels_and_automatic_names_never_collide(text):
    g = cnndsl.compile_text(text)           # verify() already refuses duplicate node names
    assert len({n.name for n in g.nodes}) == len(g.nodes)
    assert not _module_path_clashes(g), g.dump()
    stages = [st for pipe in cnndsl.parse(text).statements if not isinstance(pipe, (BlockDef, InputStmt))
              for st in (pipe.stages if isinstance(pipe, Pipeline) else (pipe,))]
    assert len(g.stages) == len(stages)
    assert all(st.label == name for st, name in zip(stages, g.stages) if isinstance(st, Labeled))
    assert cnndsl.compile_text(cnndsl.format_spec(text)).same_as(g)


def test_the_clash_check_sees_a_clash():
    nodes = [make_node("input", "input", (), {}, (3, 8, 8), "input", None),
             make_node("conv1", "relu", ("input",), {}, (3, 8, 8), "stage1", None),
             make_node("stage1.conv1", "relu", ("conv1",), {}, (3, 8, 8), "stage1", None)]
    assert _module_path_clashes(Graph(tuple(nodes))) == [("conv1", "stage1.conv1")]


LABELS = ["conv1", "relu1", "bn1", "stage1", "stage2", "stage3", "add", "proj", "proj_bn", "b1", "res1", "cat1", "a",
          "a_1", "a_2", "group1", "concat", "flatten1", "relu6", "relu6_1", "blk1", "stage", "g"]
UNITS = ["conv3-4", "relu", "relu6", "bn", "res(conv3-4)", "res(conv3-4/2 bn + conv3-8 bn)", "cat(conv1-2, conv1-2)",
         "blk()", "stage(4)"]


@st.composite
def label_soup(draw):
    """Stages of units under labels that look like automatic names, repeated or grouped at random."""
    stages = []
    for _ in range(draw(st.integers(1, 4))):
        items = []
        for _ in range(draw(st.integers(1, 3))):
            unit = draw(st.sampled_from(UNITS))
            if draw(st.booleans()):
                unit = f"{draw(st.sampled_from(LABELS))}: {unit}"
            if draw(st.integers(0, 4)) == 0:
                unit = f"({unit}) x2"
            items.append(unit)
        stage = " + ".join(items)
        if draw(st.integers(0, 2)) == 0:
            stage = f"{draw(st.sampled_from(LABELS))}: ({stage})"
        stages.append(stage)
    return "input 8x8x3\nblock blk() = conv3-4 + a: relu\nblock stage(c) = conv3-c\n" + " | ".join(stages)


@settings(max_examples=150, deadline=None)
@given(label_soup())
def test_label_soup_never_collides(text):
    try:
        g = cnndsl.compile_text(text)
    except cnndsl.CnnDslError as e:       # a clash the rules refuse rather than rename: at a label
        assert isinstance(e, NameError_) and e.span is not None, e.render()
        return
    assert not _module_path_clashes(g), g.dump()
    assert len(set(g.stages)) == len(g.stages)
    from cnndsl.ir.names import module_paths
    paths = module_paths(g)
    assert len(set(paths.values())) == len(paths)


def test_automatic_stage_names_skip_labels():
    g = cnndsl.compile_text("input 8x8x3\nconv3-4 | conv3-4 | stage4: (conv3-4 + conv3-4) | conv3-4 | stage3: relu")
    assert g.stages == ["stage1", "stage2", "stage4", "stage5", "stage3"]
    g = cnndsl.compile_text("input 8x8x3\nblock b() = stage2: relu\nconv3-4 | b()")
    assert g.stages == ["stage1", "stage3"]


@pytest.mark.parametrize("text", COLLIDING[:6])
def test_torch_builds_every_analyzed_parameter(text):
    pytest.importorskip("torch")
    g = cnndsl.compile_text(text)
    model = cnndsl.to_torch(g)
    assert sum(p.numel() for p in model.parameters()) == cnndsl.analyze(g).totals["params"]


def test_bundled_specs_keep_their_names():
    # the rules that keep names apart leave every bundled spec as it was (VGG's block is named `stage`)
    g = cnndsl.compile(ROOT / "specs" / "vgg16.cnn")
    assert g.stages[:5] == ["stage1", "stage2", "stage3", "stage4", "stage5"]
    assert [n.name for n in g.nodes[1:4]] == ["stage1.conv1", "stage1.relu1", "stage1.conv2"]


# ---------------------------------------------------------------- ASCII names ----

def test_ascii_forms_still_work():
    g = cnndsl.compile_text("input 16\u00d716\u00d73\nblock my-block(c) = conv3\u00d73-c \u00d72\nMy_Label: (my-block(4) x{2})"
                       " | Conv3-4 X2 | INPUT_2: relu")
    assert g.stages == ["My_Label", "stage2", "INPUT_2"]
    assert cnndsl.compile_text("input 8\u00d78\u00d73\nconv3-4 \u00d7{1+1} + conv3-4 \u00d72").same_as(
        cnndsl.compile_text("input 8x8x3\nconv3-4 x{1+1} + conv3-4 x2"))
    assert [n.name for n in g.nodes[1:3]] == ["My_Label.my-block1.conv1", "My_Label.my-block1.relu1"]
    assert cnndsl.compile_text("# comments may say anything: \u017f \u212a \u0131 \u00e9\nconv3-4 # \u2603").nodes[1].op == "conv"


# ---------------------------------------------------------------- bounded time and memory ----

_CHILD = textwrap.dedent("""
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (500 << 20, 500 << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
    import cnndsl
    text = sys.stdin.read()
    start = time.perf_counter()
    try:
        cnndsl.compile_text(text)
        print("compiled")
    except cnndsl.CnnDslError as e:
        print(type(e).__name__, e.line, e.column, e.message)
    print(f"{time.perf_counter() - start:.2f}s")
""")


def _run_limited(text: str) -> str:
    done = subprocess.run([sys.executable, "-c", _CHILD], input=text, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_hostile_specs_are_refused_within_5s_and_500mb():
    out = _run_limited("block e() = none\n((e() x1000) x1000) x1000")
    assert out.startswith("LimitError 2 3 the spec takes more than"), out
    out = _run_limited("input 8x8x3\n" + "relu " * 190_000)       # a 1 MB spec of layers: 190,000 nodes
    assert out.startswith("LimitError 2 "), out
    assert "grows beyond 100,000 nodes" in out


def _letters(i: int) -> str:
    return "".join("abcdefghij"[int(d)] for d in f"{i:05d}")


@pytest.mark.slow
@pytest.mark.parametrize("name,text,outcome", [
    ("100k layers", "input 8x8x3\n" + "relu " * 99_000, "compiled"),
    ("100k stages", "input 8x8x3\n" + " | ".join(["relu"] * 99_000), "compiled"),
    ("60k labels", "input 8x8x3\n" + " | ".join(f"l{i}: relu" for i in range(60_000)), "compiled"),
    ("40k blocks", "\n".join(f"block q{_letters(i)}() = relu" for i in range(40_000)) + "\nqzzzzz()",
     "NameError_ 40001 1 unknown block 'qzzzzz'"),
    ("long line", "input 8x8x3\nconv3-4" + " " * 990_000 + "+ relu", "compiled"),
    ("100k sum", "conv3-{" + _sum(100_000) + "}", "LimitError 1 8 expression nests more than"),
    ("deep parens", "input 8x8x3\n" + "(" * 64 + "relu" + ")" * 64 + " + relu" * 100_000,
     "LimitError 2 700122 the network grows beyond 100,000 nodes"),
])
def test_one_megabyte_specs_are_bounded(name, text, outcome):
    assert len(text) <= limits.MAX_SOURCE_CHARS
    assert _run_limited(text).startswith(outcome)


# ---------------------------------------------------------------- fuzz ----

ALPHABET = list("conv3-64x2+|()[]{}=,:/.*%#\n ;maxpoolfcbnresgap_0123456789eEdrXk\\") + \
    ["\u00d7", "\u017f", "\u212a", "\u0131", "\u00e9", "\u0663", "\uff13", "\u00a0", "\t", "\r"]
TOKENS = ["conv3-8", "conv", "fc10", "maxpool", "bn", "relu", "dropout", "lrn", "leakyrelu", "gap", "softmax", "none",
          "+", "|", "x2", "\u00d73", "x{", "{", "}", "(", ")", "[", "]", "=", ",", ":", "/", "-", "*", "//", "%",
          "res(", "cat(", "add(", "block b(c) = ", "b(3)", "c", "input 16x16x3\n", "activation tanh\n",
          "augment flip\n", "\n", "1e400", "1e308", "0.5", "1e-400", "eps=", "p=", "slope=", "stage2:", "lbl:",
          "add:", "proj:", "a_2:", "\u017fb", "blc\u212a", "9" * 13, "3x3", "100001", "1048577"]


def _only_our_errors(text: str) -> None:
    for fn in (cnndsl.compile_text, cnndsl.format_spec):
        try:
            result = fn(text)
        except cnndsl.CnnDslError as e:
            assert e.span is not None and e.render(), (fn.__name__, text)
            continue
        if fn is cnndsl.format_spec:      # what fmt prints parses, and prints the same again
            assert cnndsl.format_spec(result) == result, (text, result)


@settings(max_examples=250, deadline=None)
@given(st.text(alphabet=st.sampled_from(ALPHABET), max_size=60))
def test_fuzz_characters_raise_only_cnndsl_errors(text):
    _only_our_errors(text)


@settings(max_examples=250, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=16), st.sampled_from(["", " "]))
def test_fuzz_tokens_raise_only_cnndsl_errors(tokens, sep):
    _only_our_errors(sep.join(tokens))
