"""Write torchvision reference fixtures for dlkit's CNN families.

torchvision does not import beside the CPU torch build dlkit's venv uses, so run this
with a scratch venv that has it (dlkit itself is imported from the checkout, for the
list of models with torchvision's weights):

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    PYTHONPATH=. /tmp/tvenv/bin/python scripts/make_torchvision_fixtures.py

It writes, under ``tests/models/fixtures/torchvision/``:

- ``<name>.json`` for every model registered with torchvision's weights
  (``dlkit.models.list_models(pretrained=True)``; ``weights=None``; ``googlenet`` without
  and ``googlenet_aux`` with the auxiliary heads): ``{"keys": [[key, shape], ...]`` in
  state_dict order, ``"num_params": N, "torchvision": version}``;
- ``<name>_io.pt`` for a few small models: a formula-made input and the eval-mode
  output of the model loaded with formula-made weights (``tests/models/formula_weights.py``),
  so the dlkit tests can compare outputs without torchvision or shared RNG streams.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torchvision
from torchvision import models

from dlkit.models import list_models

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "models" / "fixtures" / "torchvision"
sys.path.insert(0, str(ROOT / "tests" / "models"))

from formula_weights import formula_input, formula_state_dict  # noqa: E402

# name -> (torchvision builder, its keyword arguments)
VARIANTS: dict[str, tuple[str, dict]] = {n: (n, {}) for n in list_models(pretrained=True)}
VARIANTS["googlenet"] = ("googlenet", {"aux_logits": False, "init_weights": True})
VARIANTS["googlenet_aux"] = ("googlenet", {"aux_logits": True, "init_weights": True})
# Output references: small enough to run anywhere; 64 px is above every model's minimum.
IO_MODELS = {
    "resnet18": (2, 3, 64, 64),
    "alexnet": (2, 3, 64, 64),
    "vgg11_bn": (2, 3, 64, 64),
    "googlenet": (2, 3, 64, 64),
}
MAX_IO_BYTES = 200_000


def build(name: str) -> torch.nn.Module:
    builder, kwargs = VARIANTS[name]
    with torch.device("meta"):  # shapes only: skips the costly initialisation
        return getattr(models, builder)(weights=None, **kwargs)


def write_keys(name: str) -> None:
    net = build(name)
    record = {
        "keys": [[k, list(v.shape)] for k, v in net.state_dict().items()],
        "num_params": sum(p.numel() for p in net.parameters()),
        "torchvision": torchvision.__version__,
    }
    (OUT / f"{name}.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"{name}: {len(record['keys'])} keys, {record['num_params']:,} parameters")


@torch.no_grad()
def write_io(name: str, shape: tuple[int, ...]) -> None:
    net = build(name)
    net.load_state_dict(formula_state_dict(net.state_dict()), strict=True, assign=True)
    x = formula_input(shape)
    y = net.eval()(x)
    path = OUT / f"{name}_io.pt"
    torch.save({"input": x, "output": y, "torchvision": torchvision.__version__}, path)
    size = path.stat().st_size
    if size > MAX_IO_BYTES:
        path.unlink()
        raise SystemExit(
            f"{path.name} would be {size} bytes (> {MAX_IO_BYTES}); use a smaller input"
        )
    print(f"{name}_io.pt: output {tuple(y.shape)}, |y| max {y.abs().max():.3g}, {size} bytes")


def main() -> None:
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in VARIANTS:
        write_keys(name)
    for name, shape in IO_MODELS.items():
        write_io(name, shape)


if __name__ == "__main__":
    main()
