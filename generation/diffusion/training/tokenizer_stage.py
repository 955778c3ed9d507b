"""Stage 1, the tokenizer: a byte-level BPE over the captions, saved as a ``CLIPTokenizer``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from generation.diffusion.training.common import log, record_stage
from generation.diffusion.training.presets import TrainConfig


def train_tokenizer(cfg: TrainConfig, work_dir: Path, corpus: list[str]):
    """A byte-level BPE over the caption vocabulary (``tokenizers``), saved as a ``CLIPTokenizer``.

    It uses exactly the normaliser, pre-tokeniser and ``</w>`` word-end
    convention of ``transformers.CLIPTokenizer`` so the stock class loads it;
    the full byte alphabet is kept so unseen words still tokenise.
    """
    t0 = time.time()
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE(unk_token=eos, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=1,
        special_tokens=[bos, eos],
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    clip_tok = CLIPTokenizer(vocab=model["vocab"], merges=merges, bos_token=bos, eos_token=eos, pad_token=eos, unk_token=eos)
    clip_tok.model_max_length = cfg.max_length
    out = Path(work_dir) / "tokenizer"
    clip_tok.save_pretrained(out)
    # Round-trip through from_pretrained so what is saved is what is used.
    clip_tok = CLIPTokenizer.from_pretrained(out)
    longest = max(len(clip_tok(c).input_ids) for c in corpus[:5000])
    if longest > cfg.max_length:
        raise ValueError(f"captions need {longest} tokens > max_length {cfg.max_length}")
    record_stage(work_dir, "tokenizer", vocab_size=len(clip_tok), seconds=round(time.time() - t0, 1), longest_caption_tokens=longest)
    log(f"[tokenizer] vocab {len(clip_tok)}, longest caption {longest} tokens -> {out}")
    return clip_tok


def load_tokenizer(work_dir: Path):
    return CLIPTokenizer.from_pretrained(Path(work_dir) / "tokenizer")


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
