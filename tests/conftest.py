"""Shared fixtures: the spec library and helpers for running the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.cnn"))
SPEC_IDS = [p.stem for p in SPECS]

# spec file -> (torchvision constructor name, extra kwargs)
TORCHVISION = {
    "alexnet": ("alexnet", {}),
    "vgg11": ("vgg11", {}), "vgg13": ("vgg13", {}), "vgg16": ("vgg16", {}), "vgg19": ("vgg19", {}),
    "vgg11_bn": ("vgg11_bn", {}), "vgg13_bn": ("vgg13_bn", {}), "vgg16_bn": ("vgg16_bn", {}),
    "vgg19_bn": ("vgg19_bn", {}),
    "resnet18": ("resnet18", {}), "resnet34": ("resnet34", {}), "resnet50": ("resnet50", {}),
    "resnet101": ("resnet101", {}), "resnet152": ("resnet152", {}),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": False}),
    "mobilenet_v2": ("mobilenet_v2", {}),
    "mobilenet_v3_large": ("mobilenet_v3_large", {}), "mobilenet_v3_small": ("mobilenet_v3_small", {}),
    "efficientnet_b0": ("efficientnet_b0", {}), "efficientnet_b1": ("efficientnet_b1", {}),
    "efficientnet_b2": ("efficientnet_b2", {}), "efficientnet_b3": ("efficientnet_b3", {}),
    "efficientnet_b4": ("efficientnet_b4", {}), "efficientnet_b5": ("efficientnet_b5", {}),
    "efficientnet_b6": ("efficientnet_b6", {}), "efficientnet_b7": ("efficientnet_b7", {}),
    "efficientnet_v2_s": ("efficientnet_v2_s", {}), "efficientnet_v2_m": ("efficientnet_v2_m", {}),
    "efficientnet_v2_l": ("efficientnet_v2_l", {}),
    "resnext50_32x4d": ("resnext50_32x4d", {}), "resnext101_32x8d": ("resnext101_32x8d", {}),
    "resnext101_64x4d": ("resnext101_64x4d", {}),
    "wide_resnet50_2": ("wide_resnet50_2", {}), "wide_resnet101_2": ("wide_resnet101_2", {}),
    "densenet121": ("densenet121", {}), "densenet161": ("densenet161", {}), "densenet169": ("densenet169", {}),
    "densenet201": ("densenet201", {}),
    "inception_v3": ("inception_v3", {"aux_logits": False, "init_weights": False}),
    "squeezenet1_0": ("squeezenet1_0", {}), "squeezenet1_1": ("squeezenet1_1", {}),
    "mnasnet0_5": ("mnasnet0_5", {}), "mnasnet0_75": ("mnasnet0_75", {}), "mnasnet1_0": ("mnasnet1_0", {}),
    "mnasnet1_3": ("mnasnet1_3", {}),
    "regnet_x_400mf": ("regnet_x_400mf", {}), "regnet_x_800mf": ("regnet_x_800mf", {}),
    "regnet_x_1_6gf": ("regnet_x_1_6gf", {}), "regnet_x_3_2gf": ("regnet_x_3_2gf", {}),
    "regnet_x_8gf": ("regnet_x_8gf", {}), "regnet_x_16gf": ("regnet_x_16gf", {}),
    "regnet_x_32gf": ("regnet_x_32gf", {}),
    "shufflenet_v2_x0_5": ("shufflenet_v2_x0_5", {}), "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", {}),
    "shufflenet_v2_x1_5": ("shufflenet_v2_x1_5", {}), "shufflenet_v2_x2_0": ("shufflenet_v2_x2_0", {}),
    "regnet_y_400mf": ("regnet_y_400mf", {}), "regnet_y_800mf": ("regnet_y_800mf", {}),
    "regnet_y_1_6gf": ("regnet_y_1_6gf", {}), "regnet_y_3_2gf": ("regnet_y_3_2gf", {}),
    "regnet_y_8gf": ("regnet_y_8gf", {}), "regnet_y_16gf": ("regnet_y_16gf", {}),
    "regnet_y_32gf": ("regnet_y_32gf", {}), "regnet_y_128gf": ("regnet_y_128gf", {}),
    "convnext_tiny": ("convnext_tiny", {}), "convnext_small": ("convnext_small", {}),
    "convnext_base": ("convnext_base", {}), "convnext_large": ("convnext_large", {}),
}

# spec file -> the input size torchvision's weights were trained at (weights.transforms().crop_size; the spec's
# own `input` line says the same, test_zoo checks both); a model not listed is 224x224
INPUT_SIZE = {"efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300, "efficientnet_b4": 380,
              "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600, "efficientnet_v2_s": 384,
              "efficientnet_v2_m": 480, "efficientnet_v2_l": 480,
              "inception_v3": 299, "regnet_y_128gf": 384}


def input_size(name: str) -> int:
    return INPUT_SIZE.get(name, 224)


# Torchvision models whose checks against a full torchvision model take seconds (a forward pass at full size
# over ~1.5 s on a 2-core CPU, or ~100M weights to initialise twice): those checks run with -m slow, and CI
# compares their structure at 80x80 instead (test_zoo).
SLOW_TORCHVISION = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
                    "efficientnet_v2_m", "efficientnet_v2_l",
                    "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
                    "regnet_x_16gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
                    "convnext_base", "convnext_large"}

# Slow models too big to build at all in CI (regnet_y_128gf: 645M weights, 2.6 GB in float32): CI checks their
# published metadata only (test_zoo), and everything else runs with -m slow.
HUGE_TORCHVISION = {"regnet_y_128gf"}

# Specs that add no op, block form or layout to a lighter spec of their family (value): the tests that run
# every spec (shapes, ONNX export and import, ...) run them with -m slow, so CI time goes to one of each family.
SIBLINGS = {
    "efficientnet_b1": "efficientnet_b0", "efficientnet_b2": "efficientnet_b0", "efficientnet_b3": "efficientnet_b0",
    "efficientnet_b4": "efficientnet_b0", "efficientnet_b5": "efficientnet_b0", "efficientnet_b6": "efficientnet_b0",
    "efficientnet_b7": "efficientnet_b0",
    "efficientnet_v2_m": "efficientnet_v2_s", "efficientnet_v2_l": "efficientnet_v2_s",
    "mobilenet_v3_large": "mobilenet_v3_small",
    "resnext101_32x8d": "resnext50_32x4d", "resnext101_64x4d": "resnext50_32x4d",
    "wide_resnet50_2": "resnet50", "wide_resnet101_2": "resnet101",
    "densenet161": "densenet121", "densenet169": "densenet121", "densenet201": "densenet121",
    "squeezenet1_0": "squeezenet1_1",
    "mnasnet0_75": "mnasnet0_5", "mnasnet1_0": "mnasnet0_5", "mnasnet1_3": "mnasnet0_5",
    "regnet_x_800mf": "regnet_x_400mf", "regnet_x_1_6gf": "regnet_x_400mf", "regnet_x_3_2gf": "regnet_x_400mf",
    "regnet_x_8gf": "regnet_x_400mf", "regnet_x_16gf": "regnet_x_400mf", "regnet_x_32gf": "regnet_x_400mf",
    "shufflenet_v2_x1_0": "shufflenet_v2_x0_5", "shufflenet_v2_x1_5": "shufflenet_v2_x0_5",
    "shufflenet_v2_x2_0": "shufflenet_v2_x0_5",
    "regnet_y_800mf": "regnet_y_400mf", "regnet_y_1_6gf": "regnet_y_400mf", "regnet_y_3_2gf": "regnet_y_400mf",
    "regnet_y_8gf": "regnet_y_400mf", "regnet_y_16gf": "regnet_y_400mf", "regnet_y_32gf": "regnet_y_400mf",
    "regnet_y_128gf": "regnet_y_400mf",
    "convnext_small": "convnext_tiny", "convnext_base": "convnext_tiny", "convnext_large": "convnext_tiny",
}


# The models the PyTorch backend's own test pairs with torchvision at 64x64 in CI (test_torch_backend); test_zoo
# pairs every other model of the zoo in CI, at full size and with calibrated batch norm statistics. Each check
# runs the other's models with -m slow.
BACKEND_CHECKED = {"alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
                   "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet", "mobilenet_v2"}


def spec_params(paths=None) -> list:
    """The spec files as pytest parameters (ids are their names); SIBLINGS are marked slow."""
    return [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SIBLINGS else [])
            for p in (SPECS if paths is None else paths)]


def torchvision_params(names=None, slow=()) -> list:
    """Names from TORCHVISION as pytest parameters; SLOW_TORCHVISION and `slow` are marked slow."""
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in SLOW_TORCHVISION or n in slow else [])
            for n in sorted(TORCHVISION if names is None else names)]


def spec_path(name: str) -> Path:
    return ROOT / "specs" / f"{name}.cnn"


@pytest.fixture
def cli():
    from click.testing import CliRunner

    from cnndsl.cli import main

    def run(*args, input=None):
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return run
