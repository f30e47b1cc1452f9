"""A small transformer sequence classifier built in code, with an outlier channel planted on purpose.

Large transformers grow a few activation channels hundreds of times larger than the rest (LLM.int8(), "outlier
features"). Per-tensor int8 activations then spend their whole range on that channel and round every other one to
zero. This model reproduces that exactly: after training, the final LayerNorm's scale on one channel is multiplied
by OUTLIER and the classifier's weights on that channel divided by it, so the float function is unchanged while the
classifier's input holds one channel ~OUTLIER× larger than the others. Whatever the CPU, an int8 classifier input
then keeps only that channel; keeping the classifier in float restores the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

VOCAB = 512
SEQ = 16
HIDDEN = 256
HEADS = 4
FFN = 1024
LAYERS = 2
CLASSES = 2
OUTLIER = 1000.0
OUTLIER_CHANNEL = 7
SIGNAL_CHANNEL = 3
SIGNAL = 2.0
SEED = 0


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and a GELU feed-forward, written out so every projection is one Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.up, self.down = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h = self.norm1(x)
        q, k, v = (p(h).view(b, s, HEADS, HIDDEN // HEADS).transpose(1, 2) for p in (self.q, self.k, self.v))
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS), dim=-1)
        x = x + self.o((scores @ v).transpose(1, 2).reshape(b, s, HIDDEN))
        return x + self.down(nn.functional.gelu(self.up(self.norm2(x))))


class SequenceClassifier(nn.Module):
    """Token ids (batch, SEQ) -> CLASSES logits: embeddings, LAYERS encoder layers, mean pool, LayerNorm, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.position = nn.Parameter(torch.zeros(SEQ, HIDDEN))
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(HIDDEN)
        self.classifier = nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.norm(x.mean(dim=1)))

    def example_inputs(self) -> dict[str, np.ndarray]:
        return {"tokens": text_data(256, seed=1)[0]}

    def eval_data(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        tokens, labels = text_data(1000, seed=2)
        return {"tokens": tokens}, labels


def text_data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of token ids; the label says whether more of them come from the lower half of the vocabulary.
    Ties are redrawn so that every label is decided by the data."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, size=(count * 2, SEQ), dtype=np.int64)
    low = (tokens < VOCAB // 2).sum(axis=1)
    keep = low != SEQ // 2
    return tokens[keep][:count], (low[keep][:count] > SEQ // 2).astype(np.int64)


def build_classifier(seed: int = SEED) -> SequenceClassifier:
    """Weights set in code, no training (instant on any machine): token embeddings carry their half of the
    vocabulary as +-SIGNAL on channel SIGNAL_CHANNEL, random elsewhere; the encoder layers are random with their
    output projections scaled down so they perturb rather than erase it; the classifier reads that channel. The
    decision margins are then wide (the label needs a majority of 9 of 16), like a trained model's, not ties."""
    torch.manual_seed(seed)
    model = SequenceClassifier()
    with torch.no_grad():
        model.embed.weight.normal_(0.0, 0.5)
        low = torch.arange(VOCAB) < VOCAB // 2
        model.embed.weight[:, SIGNAL_CHANNEL] = torch.where(low, SIGNAL, -SIGNAL)
        for layer in model.layers:
            assert isinstance(layer, EncoderLayer)
            layer.o.weight.mul_(0.1)
            layer.down.weight.mul_(0.1)
        model.classifier.weight.normal_(0.0, 0.01)
        model.classifier.weight[1, SIGNAL_CHANNEL] += 1.0
        model.classifier.weight[0, SIGNAL_CHANNEL] -= 1.0
        model.classifier.bias.zero_()
    return model.eval()


def plant_outlier(model: SequenceClassifier, factor: float = OUTLIER, channel: int = OUTLIER_CHANNEL) -> None:
    """Scale one channel of the classifier's input up and its weights down by the same factor: same function."""
    with torch.no_grad():
        model.norm.weight[channel] *= factor
        model.norm.bias[channel] *= factor
        model.classifier.weight[:, channel] /= factor


def outlier_classifier() -> SequenceClassifier:
    """The classifier with its planted outlier channel."""
    model = build_classifier()
    plant_outlier(model)
    return model
