"""The embedded default tensor model: a small CNN trained on scikit-learn's offline `digits` data.

Training is seeded and takes seconds; the weights are cached so the demo and the tests train once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edge_sdk.fsutil import cache_dir

WEIGHTS_VERSION = 1
SEED = 0


@dataclass(frozen=True)
class DigitsData:
    train_x: np.ndarray  # float32 (N, 1, 8, 8) in [0, 1]
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray


def digits_data() -> DigitsData:
    """The 1,797 8x8 digit images that ship with scikit-learn, split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    tx, ex, ty, ey = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    return DigitsData(tx, ty, ex, ey)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a max-pool and two dense layers: 10 logits for an 8x8 image."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def example_inputs(self) -> dict[str, np.ndarray]:
        """Real digits to trace and calibrate with: a convention `convert` looks for on any model."""
        return {"input": digits_data().train_x[:256]}

    def train_data(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The training split: what recovery after pruning fine-tunes on (a convention, like eval_data)."""
        data = digits_data()
        return {"input": data.train_x}, data.train_y

    def eval_data(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The held-out split with labels, so conversion measures real accuracy (also a convention)."""
        data = digits_data()
        return {"input": data.test_x}, data.test_y


def train_digits_cnn(epochs: int = 30, seed: int = SEED) -> DigitsCNN:
    torch.manual_seed(seed)
    data = digits_data()
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def digits_cnn() -> DigitsCNN:
    """The trained digits CNN, from the cache or trained now (seconds) and cached."""
    path = cache_dir() / "zoo" / f"digits_cnn-v{WEIGHTS_VERSION}-seed{SEED}.pt"
    model = DigitsCNN()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train_digits_cnn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: parallel test workers never read half a file
    return model


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=-1) == labels).mean())
