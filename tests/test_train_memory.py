"""Training memory (cnndsl.analysis.memory) held to PyTorch: the tensors autograd saves while the generated module
trains, counted once per storage, must be what the planner says, for every bundled spec; the optimizer state and
gradients after a real step too; and `cnndsl analyze --train` must not import torch."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnndsl import compile as compile_spec
from cnndsl.analysis import memory

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.cnn"))
SIZES = (32, 64, 96, 128, 160, 224)      # the smallest input each spec takes
BATCH = 2


def small(path: Path):
    """The spec compiled at the smallest of SIZES it accepts, or None."""
    for size in SIZES:
        try:
            return compile_spec(path, input_shape=(size, size, 3))
        except Exception:       # too small for this network: try the next size
            continue
    return None


def measured(graph, batch: int = BATCH, amp: bool = False):
    """(bytes of every storage autograd saved in a training forward pass, parameters and buffers left out; the
    model; its output). The model is built on the meta device and given uninitialised CPU memory: the values (even NaNs)
    change nothing that is saved, and skipping the initialisation keeps the big networks fast."""
    import torch

    from cnndsl.backends.to_torch import to_torch
    with torch.device("meta"):
        model = to_torch(graph, logits=True)
    model = model.to_empty(device="cpu").train()
    state = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in state:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    c, h, w = graph.input_shape
    x = torch.randn(batch, c, h, w)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if amp:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = model(x)
        else:
            y = model(x)
    return sum(seen.values()), model, y


def test_activations_match_pytorch_for_every_bundled_spec():
    pytest.importorskip("torch")
    results, skipped = [], []
    for path in SPECS:
        graph = small(path)
        if graph is None:
            skipped.append(path.name)
            continue
        got, _, _ = measured(graph)
        gc.collect()
        plan = memory.train_memory(graph, batch=BATCH, device="cpu")
        results.append((path.name, plan["activations"], got))
        layers = plan["per_layer"]
        assert sum(layers.values()) == plan["activations"], path.name
    assert len(results) + len(skipped) == len(SPECS) and len(results) >= len(SPECS) - 2, skipped
    wrong = [(name, want, got, f"{100 * (want - got) / got:+.2f}%") for name, want, got in results
             if abs(want - got) > 0.02 * got]
    assert not wrong, wrong
    exact = sum(want == got for _, want, got in results)
    assert exact == len(results), [r for r in results if r[1] != r[2]]


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "mobilenet_v2", "lenet5"])
def test_autocast_activations_match_pytorch(name):
    """bf16 autocast (on the CPU: its conv, fc and batch norm behave as on CUDA): conv and fc keep half copies of
    float32 inputs and of their weights; the rest runs in bfloat16."""
    pytest.importorskip("torch")
    graph = small(SPECS[0].parent / f"{name}.cnn")
    got, _, _ = measured(graph, amp=True)
    plan = memory.train_memory(graph, batch=BATCH, amp="bf16", device="cpu")
    assert plan["activations"] + plan["weight_copies"] == got


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "convnext_tiny", "efficientnet_b0"])
def test_grads_and_optimizer_state_after_a_step(name):
    torch = pytest.importorskip("torch")
    graph = small(SPECS[0].parent / f"{name}.cnn")
    for optimizer in ("sgd", "adamw", "adam"):
        _, model, y = measured(graph)
        opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
               "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
               "adam": lambda p: torch.optim.Adam(p, lr=1e-3)}[optimizer](model.parameters())
        y.float().square().mean().backward()
        opt.step()
        state = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
        grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
        weights = sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))
        plan = memory.train_memory(graph, batch=BATCH, optimizer=optimizer, device="cpu")
        assert plan["optimizer"] == state, optimizer
        assert plan["grads"] == grads
        assert weights == plan["weights"]       # num_batches_tracked counted as the int64 it is


def test_peak_fit_and_linear_model():
    graph = compile_spec(SPECS[0].parent / "resnet50.cnn")
    one = memory.train_memory(graph, batch=1)
    eight = memory.train_memory(graph, batch=8)
    fixed, each = memory.per_image(graph)
    assert eight["peak"] == fixed + 8 * each and one["peak"] == fixed + each
    assert one["peak"] == sum(one[k] for k in ("weights", "grads", "optimizer", "activations", "weight_copies",
                                                "transient"))
    limit = memory.parse_bytes("80GB")
    assert limit == 80 * 10**9 and memory.parse_bytes("80GiB") == 80 * 2**30
    fit = memory.fit_batch(graph, limit)
    assert fixed + fit * each <= limit < fixed + (fit + 1) * each
    assert memory.train_memory(graph, batch=1, optimizer="none")["optimizer"] == 0
    amp = memory.train_memory(graph, batch=8, amp="bf16")
    assert amp["activations"] < eight["activations"] and amp["weight_copies"] > 0
    assert amp["grads"] == eight["grads"] and amp["weights"] == eight["weights"]


def run_cli(*args):
    code = ("import sys, runpy; sys.argv = ['cnndsl'] + sys.argv[1:]\n"
            "from cnndsl.cli.main import main\n"
            "try:\n    main(standalone_mode=False)\n"
            "finally:\n    print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_analyze_train_json_and_no_torch_import():
    spec = str(SPECS[0].parent / "resnet18.cnn")
    done = run_cli("analyze", spec, "--train", "--optimizer", "adamw", "--batch", "4", "--json", "--fit", "80GB")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("NOTORCH")
    data = json.loads(done.stdout)
    tm = data["totals"]["train_memory"]
    want = memory.train_memory(compile_spec(spec), batch=4, optimizer="adamw")
    for key in ("weights", "grads", "optimizer", "activations", "peak"):
        assert tm[key] == want[key]
    assert tm["fit_batch"] == memory.fit_batch(compile_spec(spec), 80 * 10**9, optimizer="adamw")
    assert sum(row["saved_bytes"] for row in data["layers"]) == tm["activations"]
    table = run_cli("analyze", spec, "--train", "--amp", "bf16")
    assert table.returncode == 0, table.stderr
    assert "training memory (adamw, amp bf16, batch 1): weights" in table.stdout
    assert table.stderr.strip().endswith("NOTORCH")
