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
}


def spec_path(name: str) -> Path:
    return ROOT / "specs" / f"{name}.cnn"


@pytest.fixture
def cli():
    from click.testing import CliRunner

    from cnndsl.cli import main

    def run(*args, input=None):
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return run
