"""Padding at the two ends of a window: PyTorch's padding='same', TensorFlow's SAME and explicit pad_end, held
to PyTorch's own convolution and to TensorFlow's published output-size rule."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl

torch = pytest.importorskip("torch")


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 6), d=st.integers(1, 3), h=st.integers(6, 14), w=st.integers(6, 14))
def test_same_is_pytorchs_same(k, d, h, w):
    """cnndsl's `same` computes exactly what nn.Conv2d(padding='same') computes, even kernels included."""
    g = cnndsl.compile_text(f"input {h}x{w}x2\nconv{k}x{k + 1}-3[same, dilation={d}, nobias] none")
    ours = cnndsl.to_torch(g).eval()
    ref = torch.nn.Conv2d(2, 3, (k, k + 1), padding="same", dilation=d, bias=False)
    (conv,) = [m for m in ours.modules() if isinstance(m, torch.nn.Conv2d)]
    ref.weight.data.copy_(conv.weight.data)
    x = torch.randn(1, 2, h, w)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 7), s=st.integers(1, 4), d=st.integers(1, 2), n=st.integers(1, 20))
def test_tfsame_gives_ceil_n_over_s(k, s, d, n):
    """TensorFlow's SAME: ceil(n / stride) outputs, total padding max((out-1)*s + keff - n, 0), the odd cell
    after; the same rule for max pooling."""
    keff = d * (k - 1) + 1
    g = cnndsl.compile_text(f"input {n}x{n}x1\nconv{k}-2/{s}[tfsame, dilation={d}] + maxpool{k}/{s}[tfsame]")
    out = -(-n // s)
    total = max((out - 1) * s + keff - n, 0)
    a = g["conv1"].attrs
    assert g["conv1"].shape[1:] == (out, out)
    assert a["padding"] == (total // 2,) * 2 and a["pad_end"] == (total - total // 2,) * 2
    pooled = -(-out // s)
    assert g.output.shape[1:] == (pooled, pooled)


def test_explicit_pad_end_against_a_padded_convolution():
    g = cnndsl.compile_text("input 9x8x2\nconv3x2-4/2[pad=0x1, pad_end=2x0] none + maxpool3/2[pad=1x0, pad_end=0x2] "
                            "+ avgpool2/1[pad_end=1]")
    model = cnndsl.to_torch(g).eval()
    (conv,) = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    x = torch.randn(1, 2, 9, 8)
    F = torch.nn.functional
    y = F.conv2d(F.pad(x, (1, 0, 0, 2)), conv.weight, conv.bias, stride=2)
    y = F.max_pool2d(F.pad(y, (0, 2, 1, 0), value=float("-inf")), 3, 2)
    y = F.avg_pool2d(F.pad(y, (0, 1, 0, 1)), 2, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), y, atol=1e-6)
    assert g.output.shape == tuple(y.shape[1:])


@pytest.mark.parametrize("text, message", [
    ("conv3-4[same, pad_end=1]", "pad_end given with 'same'"),
    ("maxpool3/2[pad_end=3]", "not smaller than the kernel 3"),
    ("maxpool3/2[pad_end=1, ceil]", "ceil mode with padding that differs"),
    ("avgpool3/2[tfsame]", "tfsame average pooling"),
    ("maxpool3/2[tfsame, pad=1]", "padding given twice"),
])
def test_refused_padding(text, message):
    with pytest.raises(cnndsl.CnnDslError, match=message):
        cnndsl.compile_text("input 9x9x2\n" + text)
