"""An oracle independent of cnndsl: multiply-accumulates counted from a real PyTorch forward pass."""
from __future__ import annotations


def measured(model, image=224, device=None, output=False):
    """Run a real forward pass; count conv/linear MACs from the shapes torch produced.

    Returns (MACs, the output shape of every Conv2d, and of every Linear on a channels-last map, in the order
    they ran), and with output=True the model's output shape per image too. device="meta" runs the pass on
    PyTorch's meta device (shapes only, no arithmetic), for a model built there."""
    import torch

    macs, conv_shapes = [], []

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            macs.append(out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
            conv_shapes.append(tuple(out.shape[1:]))
        elif isinstance(m, torch.nn.Linear):
            # in x out at each position it is applied to: a vector's one, or every pixel of a channels-last map
            # (ConvNeXt's), which is a 1x1 convolution and is listed with the convolutions, channels first
            macs.append(out[0].numel() * m.in_features)
            if out.dim() == 4:
                conv_shapes.append((out.shape[3], out.shape[1], out.shape[2]))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, image, image, device=device))
    finally:
        for h in handles:
            h.remove()
    return (sum(macs), conv_shapes, tuple(out.shape[1:])) if output else (sum(macs), conv_shapes)
