"""Tiny but real-format tokenizers, built offline for tiny test models. Torch-free.

* CLIP: a byte-level BPE in CLIP's on-disk format (vocab.json + merges.txt), with merges learned from a
  small built-in English + Chinese word list; loads with ``CLIPTokenizer.from_pretrained``.
* Qwen: a byte-level BPE trained with the ``tokenizers`` library, wrapped as ``Qwen2Tokenizer`` with a
  chat template, as ``ZImagePipeline`` calls it (``apply_chat_template(..., enable_thinking=True)``).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from modules.loader.tokenizers import bytes_to_unicode, write_clip_tokenizer

#: Words the tiny CLIP BPE learns its merges from (lower case: CLIP lower-cases its input).
WORDS = (
    "a an the of and with in on at by for to from photo photograph portrait picture image painting "
    "drawing close up closeup headshot face faces eyes eye nose mouth lips smile smiling hair hairs "
    "long short black blonde brown red white blue green golden light lighting soft studio natural "
    "window sunlight sunset background bokeh blurry sharp detailed realistic cinematic film grain "
    "woman women man men girl boy child old young person people lady gentleman wearing dress shirt "
    "jacket hat glasses earrings necklace looking camera viewer standing sitting outdoor indoor street "
    "city park garden forest beach mountain sky cloud clouds cat cats dog dogs bird flower flowers "
    "high quality best masterpiece lowres bad ugly deformed worst jpeg artifacts watermark text "
    "beautiful pretty handsome elegant happy sad serious calm warm cold color colors colorful "
    "这是 一张 一只 照片 肖像 女人 男人 女孩 男孩 老人 猫 狗 花 微笑 头发 眼睛 光线 柔和 背景 "
    "高质量 细节 写实 电影 街道 城市 公园 天空 阳光 黑色 白色 红色 蓝色 金色 长发 短发"
).split()
#: Sentences the tiny Qwen BPE is trained on.
SENTENCES = (
    "a photo of a cat", "portrait of a young woman, soft window light, film grain",
    "close-up headshot of an old man with a white beard", "a girl smiling in a park at sunset",
    "high quality, detailed, realistic, cinematic lighting", "lowres, blurry, bad anatomy, watermark",
    "一张猫的照片", "柔和光线下的年轻女子肖像", "一位白胡子老人的特写", "夕阳下公园里微笑的女孩",
    "高质量，细节丰富，写实，电影感光线", "The quick brown fox jumps over the lazy dog. 0123456789",
)
CLIP_MERGES = 400
QWEN_VOCAB = 600
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
#: Qwen3-style chat template (written for Visage; same roles and markers as Qwen3's).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def _word_symbols(word: str, enc: dict[int, str]) -> tuple[str, ...]:
    chars = [enc[b] for b in word.encode("utf-8")]
    return (*chars[:-1], chars[-1] + "</w>")


def _apply_merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_clip_merges(words: tuple[str, ...] = WORDS, count: int = CLIP_MERGES) -> list[str]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair). Deterministic."""
    enc = bytes_to_unicode()
    corpus = Counter(_word_symbols(w, enc) for w in words)
    merges: list[str] = []
    while len(merges) < count:
        pairs: Counter = Counter()
        for symbols, n in corpus.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(f"{best[0]} {best[1]}")
        merged: Counter = Counter()
        for symbols, n in corpus.items():
            merged[_apply_merge(symbols, best)] += n
        corpus = merged
    return merges


def write_tiny_clip_tokenizer(out: Path, *, pad_token: str = "<|endoftext|>") -> Path:
    """A small CLIP tokenizer folder at ``out`` (see :func:`tiny_clip_vocab_size`)."""
    return write_clip_tokenizer(learn_clip_merges(), Path(out), pad_token=pad_token)


def tiny_clip_vocab_size() -> int:
    """Vocabulary size of the tiny CLIP tokenizer: 2 × 256 byte symbols + merges + 2 specials."""
    return 512 + len(learn_clip_merges()) + 2


def tiny_qwen_tokenizer():
    """A ``Qwen2Tokenizer`` with a BPE trained on :data:`SENTENCES` and a Qwen3-style chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=QWEN_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(QWEN_SPECIAL), show_progress=False)
    backend.train_from_iterator(SENTENCES, trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=list(QWEN_SPECIAL[1:]),
                               model_max_length=512)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
