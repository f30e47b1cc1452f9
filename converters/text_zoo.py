"""Random-weight Hugging Face text encoders written to a directory, built in code (no download): what the tests,
the benchmark and a new user's first try feed to `convert` as if it were a published model.

The tokenizer is a real WordPiece tokenizer (`tokenizers`) over a small vocabulary: every word splits into known
pieces (letters as a fallback), with [CLS]/[SEP] added as BERT's does.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

WORDS = (
    "the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "as", "was", "at", "by", "an",
    "be", "this", "are", "from", "or", "have", "not", "but", "what", "all", "when", "we", "there", "can", "your",
    "which", "if", "do", "will", "how", "up", "out", "then", "she", "so", "time", "no", "make", "than", "first",
    "people", "my", "made", "over", "down", "only", "way", "use", "water", "long", "little", "very", "after", "where",
    "know", "model", "device", "small", "board", "data", "run", "day",
)  # fmt: skip


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase + string.digits + ".,!?'-")
    pieces = [*specials, *WORDS, *letters, *[f"##{c}" for c in letters]]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    fast.save_pretrained(str(path))


def tiny_text_encoder(
    path: str | Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 64,
    labels: tuple[str, ...] = (),
    pooling: str | None = None,
    normalize: bool = False,
    seed: int = 0,
    arch: str = "bert",
) -> Path:
    """A BERT encoder (with a sequence-classification head when `labels` are given) saved as transformers does,
    with tokenizer.json; `pooling` adds a sentence-transformers layout (modules.json, 1_Pooling/config.json).
    `arch`: 'bert', or 'distilbert' / 'roberta' (the same sizes in those families' own classes)."""
    import torch
    from transformers import AutoModel, BertConfig, BertForSequenceClassification, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _tokenizer(path)
    vocab_size = len(json.loads((path / "tokenizer.json").read_text())["model"]["vocab"])
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    if arch != "bert":
        other = _other_family(arch, vocab_size, hidden, layers, heads, max_positions)
        AutoModel.from_config(other).eval().save_pretrained(str(path))
        return path
    if labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
        model: BertModel | BertForSequenceClassification = BertForSequenceClassification(config)
    else:
        model = BertModel(config, add_pooling_layer=False)
    model.eval()
    model.save_pretrained(str(path))
    if pooling is not None:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        if normalize:
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
        (path / "modules.json").write_text(json.dumps(modules, indent=2))
        (path / "1_Pooling").mkdir(exist_ok=True)
        modes = {f"pooling_mode_{p}_token" if p == "cls" else f"pooling_mode_{p}_tokens": p == pooling
                 for p in ("cls", "mean", "max")}  # fmt: skip
        (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, **modes}))
    return path


def _other_family(arch: str, vocab: int, hidden: int, layers: int, heads: int, positions: int) -> object:
    from transformers import DistilBertConfig, RobertaConfig

    if arch == "distilbert":
        return DistilBertConfig(vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=hidden * 4,
                                max_position_embeddings=positions, pad_token_id=0)  # fmt: skip
    if arch == "roberta":  # positions count from the padding index (0 here) + 1: the table holds one more
        return RobertaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=hidden * 4,
            max_position_embeddings=positions + 1,
            pad_token_id=0,
        )
    raise ValueError(f"unknown arch {arch!r}; valid: bert, distilbert, roberta")
