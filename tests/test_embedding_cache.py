"""Prompt-embedding cache: keys, LRU, persistence, threads, and bit-exact reuse in real pipelines."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from modules.embedding_cache import CacheKey, EmbeddingCache, text_encoder_state
from modules.embedding_cache.embeds import nbytes
from modules.errors import InvalidRequest

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------

def make_key(prompt: str = "a portrait", **overrides) -> CacheKey:
    fields = dict(
        model_hash="m" * 10,
        text_encoder_state="",
        clip_skip=1,
        prompt=prompt,
        negative_prompt="blurry",
        options={"family": "sd15", "do_cfg": True},
    )
    fields.update(overrides)
    return CacheKey(**fields)


def sd_embeds(seed: int = 0, dtype: torch.dtype = torch.float32, tokens: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(1, tokens, 8, generator=g).to(dtype),
        "negative_prompt_embeds": torch.randn(1, tokens, 8, generator=g).to(dtype),
    }


def special_values(dtype: torch.dtype) -> torch.Tensor:
    """Values whose bits a lossy or value-based round trip would change."""
    return torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-30, 65504.0, -3.5]).to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_bitwise_equal(a, b) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_bitwise_equal(x, y)
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(bits(a), bits(b))


def assert_embeds_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        assert_bitwise_equal(a[name], b[name])


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, embeds: dict, delay_s: float = 0.0):
        self.embeds = embeds
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> dict:
        with self._lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.embeds


# -- keys ------------------------------------------------------------------------------------

def test_digest_changes_with_every_field():
    base = make_key()
    variants = [
        make_key(model_hash="other"),
        make_key(text_encoder_state=text_encoder_state([("face", "abc123", 0.8)])),
        make_key(clip_skip=2),
        make_key(prompt="a portrait,"),
        make_key(negative_prompt="blurry, lowres"),
        make_key(options={"family": "sd15", "do_cfg": False}),
        make_key(options={"family": "sd15", "do_cfg": True, "te_dtype": "float16"}),
        make_key(options={"family": "sd15", "do_cfg": 1}),  # bool and int are different values
        make_key(options={"family": "sdxl", "do_cfg": True}),
    ]
    digests = {base.digest()} | {k.digest() for k in variants}
    assert len(digests) == len(variants) + 1
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


def test_options_order_does_not_matter_and_are_validated():
    a = make_key(options={"family": "zimage", "max_sequence_length": 512, "do_cfg": False})
    b = make_key(options=[("do_cfg", False), ("max_sequence_length", 512), ("family", "zimage")])
    assert a == b and a.digest() == b.digest()
    assert a.option("max_sequence_length") == 512
    assert hash(a) == hash(b)
    with pytest.raises(InvalidRequest):
        make_key(options=[("a", 1), ("a", 2)])
    with pytest.raises(InvalidRequest):
        make_key(options={"x": [1, 2]})
    with pytest.raises(InvalidRequest):
        make_key(options={"x": float("nan")})
    with pytest.raises(InvalidRequest):
        make_key(clip_skip="2")
    with pytest.raises(InvalidRequest):
        make_key(model_hash="")


def test_text_encoder_state():
    assert text_encoder_state([]) == ""
    one = text_encoder_state([("face", "abc", 0.8)])
    assert one != text_encoder_state([("face", "abc", 0.7)])
    assert one != text_encoder_state([("face", "abd", 0.8)])
    assert text_encoder_state([("face", "abc", 1)]) == text_encoder_state([("face", "abc", 1.0)])
    two = text_encoder_state([("a", "h1", 0.5), ("b", "h2", 1.0)])
    assert two != text_encoder_state([("b", "h2", 1.0), ("a", "h1", 0.5)])  # order is kept
    assert json.loads(two) == [["a", "h1", 0.5], ["b", "h2", 1.0]]
    with pytest.raises(InvalidRequest):
        text_encoder_state([("a", "h", float("inf"))])


GOLDEN_KEY = dict(
    model_hash="0123456789ab",
    text_encoder_state="",
    clip_skip=2,
    prompt="portrait of a woman, 85mm, 柔光",
    negative_prompt="lowres",
    options={"family": "sdxl", "do_cfg": True},
)


def test_digest_is_stable_across_processes():
    here = CacheKey(**GOLDEN_KEY).digest()
    code = (
        "import json, sys; from modules.embedding_cache import CacheKey; "
        "print(CacheKey(**json.loads(sys.argv[1])).digest())"
    )
    results = set()
    for seed in ("1", "2"):  # different str hash randomization
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(GOLDEN_KEY)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
        )
        results.add(out.stdout.strip())
    assert results == {here}


# -- RAM cache -------------------------------------------------------------------------------

def test_hit_does_not_compute_and_counts():
    cache = EmbeddingCache(max_bytes=1 << 20)
    compute = Counter(sd_embeds(0), delay_s=0.05)
    key = make_key()
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(key, compute)
    third = cache.get_or_compute(key, compute)
    assert compute.calls == 1
    assert_embeds_equal(first, sd_embeds(0))
    assert_embeds_equal(second, first)
    assert_embeds_equal(third, first)
    s = cache.stats()
    assert (s.hits, s.misses, s.entries) == (2, 1, 1)
    assert s.bytes == nbytes(sd_embeds(0)) == 2 * 4 * 8 * 4
    assert s.time_saved_s >= 2 * 0.04
    assert s.disk_entries == 0
    assert cache.get(make_key("never seen")) is None
    assert cache.stats().misses == 2


def test_other_models_stay_and_are_reused():
    cache = EmbeddingCache(max_bytes=1 << 20)
    a, b = make_key(model_hash="model-a"), make_key(model_hash="model-b")
    ca, cb = Counter(sd_embeds(1)), Counter(sd_embeds(2))
    cache.get_or_compute(a, ca)
    cache.get_or_compute(b, cb)
    out = cache.get_or_compute(a, ca)  # switch back
    assert (ca.calls, cb.calls) == (1, 1)
    assert_embeds_equal(out, sd_embeds(1))


def test_lru_eviction_respects_max_bytes():
    size = nbytes(sd_embeds(0))
    cache = EmbeddingCache(max_bytes=2 * size + size // 2)
    keys = [make_key(f"p{i}") for i in range(3)]
    cache.put(keys[0], sd_embeds(0))
    cache.put(keys[1], sd_embeds(1))
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recent
    cache.put(keys[2], sd_embeds(2))  # evicts keys[1]
    s = cache.stats()
    assert s.entries == 2 and s.bytes == 2 * size <= s.max_bytes
    assert cache.get(keys[1]) is None
    assert_embeds_equal(cache.get(keys[0]), sd_embeds(0))
    assert_embeds_equal(cache.get(keys[2]), sd_embeds(2))
    cache.put(keys[2], sd_embeds(3))  # replacing an entry does not double-count
    assert cache.stats().bytes == 2 * size
    assert_embeds_equal(cache.get(keys[2]), sd_embeds(3))
    assert cache.put(keys[2], sd_embeds(4, tokens=64)) is False  # too large: the old value goes too
    assert cache.get(keys[2]) is None and cache.stats().bytes == size


def test_entry_larger_than_max_bytes_is_not_cached(tmp_path):
    big = sd_embeds(0, tokens=64)
    cache = EmbeddingCache(max_bytes=nbytes(big) - 1, persist_dir=tmp_path)
    compute = Counter(big)
    key = make_key()
    assert cache.put(key, big) is False
    out1 = cache.get_or_compute(key, compute)
    out2 = cache.get_or_compute(key, compute)
    assert compute.calls == 2
    assert_embeds_equal(out1, big)
    assert_embeds_equal(out2, big)
    s = cache.stats()
    assert (s.entries, s.bytes, s.disk_entries, s.hits, s.misses) == (0, 0, 0, 0, 2)
    assert list(tmp_path.iterdir()) == []


def test_results_are_copies():
    cache = EmbeddingCache(max_bytes=1 << 20)
    key = make_key()
    original = sd_embeds(0)
    given = {k: v.clone() for k, v in original.items()}
    cache.put(key, given)
    given["prompt_embeds"].add_(1.0)  # the caller's tensor after put
    got = cache.get(key)
    assert_embeds_equal(got, original)
    got["prompt_embeds"].mul_(0.0)
    got["negative_prompt_embeds"] = None
    again = cache.get(key)
    assert_embeds_equal(again, original)
    assert again["prompt_embeds"].data_ptr() != got["prompt_embeds"].data_ptr()

    computed = cache.get_or_compute(make_key("new"), Counter(sd_embeds(5)))
    computed["prompt_embeds"].fill_(7.0)  # a miss also hands back a copy
    assert_embeds_equal(cache.get(make_key("new")), sd_embeds(5))


def test_lists_are_copies_and_none_is_kept():
    cache = EmbeddingCache(max_bytes=1 << 20)
    key = make_key(options={"family": "zimage", "do_cfg": False})
    value = {"prompt_embeds": [torch.randn(5, 16), torch.randn(9, 16)], "negative_prompt_embeds": [], "x": None}
    cache.put(key, value)
    got = cache.get(key)
    got["prompt_embeds"].append(torch.zeros(1, 16))
    got["prompt_embeds"][0].zero_()
    again = cache.get(key)
    assert_embeds_equal(again, value)
    assert again["negative_prompt_embeds"] == [] and again["x"] is None


def test_get_converts_dtype_from_the_stored_bits():
    cache = EmbeddingCache(max_bytes=1 << 20)
    key = make_key()
    value = sd_embeds(0)
    cache.put(key, value)
    half = cache.get(key, device="cpu", dtype=torch.float16)
    assert half["prompt_embeds"].dtype == torch.float16
    assert_bitwise_equal(half["prompt_embeds"], value["prompt_embeds"].to(torch.float16))
    assert cache.get(key)["prompt_embeds"].dtype == torch.float32  # the stored copy is unchanged


def test_rejects_malformed_embeds():
    cache = EmbeddingCache(max_bytes=1 << 20)
    with pytest.raises(InvalidRequest):
        cache.put(make_key(), {"prompt_embeds": "not a tensor"})
    with pytest.raises(InvalidRequest):
        cache.put(make_key(), {"prompt.embeds": torch.zeros(1)})
    with pytest.raises(InvalidRequest):
        cache.put(make_key(), {"prompt_embeds": [torch.zeros(1), 3]})
    with pytest.raises(InvalidRequest):
        EmbeddingCache(max_bytes=-1)


def test_clear_drops_entries_and_files(tmp_path):
    cache = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    cache.put(make_key("a"), sd_embeds(0))
    cache.put(make_key("b"), sd_embeds(1))
    assert cache.stats().disk_entries == 2
    cache.clear()
    s = cache.stats()
    assert (s.entries, s.bytes, s.disk_entries) == (0, 0, 0)
    assert cache.get(make_key("a")) is None


# -- threads ---------------------------------------------------------------------------------

def test_threads_share_one_computation():
    cache = EmbeddingCache(max_bytes=1 << 20)
    compute = Counter(sd_embeds(0), delay_s=0.1)
    key = make_key()
    results, errors = [], []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait()
            results.append(cache.get_or_compute(key, compute))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == [] and len(results) == 8
    assert compute.calls == 1
    for r in results:
        assert_embeds_equal(r, sd_embeds(0))
    ptrs = {r["prompt_embeds"].data_ptr() for r in results}
    assert len(ptrs) == 8  # every caller got its own copy
    s = cache.stats()
    assert (s.hits, s.misses) == (7, 1)


def test_failed_compute_lets_a_waiter_retry():
    cache = EmbeddingCache(max_bytes=1 << 20)
    key = make_key()
    started = threading.Event()
    release = threading.Event()

    def failing():
        started.set()
        release.wait(5)
        raise RuntimeError("text encoder exploded")

    box = {}

    def first():
        try:
            cache.get_or_compute(key, failing)
        except RuntimeError as exc:
            box["error"] = exc

    t1 = threading.Thread(target=first)
    t1.start()
    assert started.wait(5)
    compute = Counter(sd_embeds(3))
    t2 = threading.Thread(target=lambda: box.setdefault("result", cache.get_or_compute(key, compute)))
    t2.start()
    time.sleep(0.05)  # t2 is now waiting on t1's computation
    release.set()
    t1.join(5)
    t2.join(5)
    assert "text encoder exploded" in str(box["error"])
    assert compute.calls == 1
    assert_embeds_equal(box["result"], sd_embeds(3))


def test_concurrent_mixed_keys_stay_within_bounds(tmp_path):
    size = nbytes(sd_embeds(0))
    cache = EmbeddingCache(max_bytes=3 * size, persist_dir=tmp_path, max_disk_bytes=1 << 20)
    errors = []

    def worker(offset):
        try:
            for i in range(40):
                j = (i * 7 + offset) % 6
                out = cache.get_or_compute(make_key(f"p{j}"), lambda j=j: sd_embeds(j))
                assert_embeds_equal(out, sd_embeds(j))
                assert cache.stats().bytes <= 3 * size
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    s = cache.stats()
    assert s.hits + s.misses == 160 and s.entries <= 3 and s.disk_entries == 6


def test_warm_never_holds_the_cache_lock_while_computing():
    cache = EmbeddingCache(max_bytes=1 << 20)
    cache.put(make_key("already"), sd_embeds(9))
    observed = []

    def compute_that_uses_the_cache():
        # Another thread must be able to use the cache while this compute runs.
        t = threading.Thread(target=lambda: observed.append(cache.get(make_key("already")) is not None))
        t.start()
        t.join(5)
        assert not t.is_alive(), "cache lock held during compute"
        return sd_embeds(4)

    failing_calls = []

    def failing():
        failing_calls.append(1)
        raise RuntimeError("boom")

    plain = Counter(sd_embeds(1))
    report = cache.warm([
        (make_key("already"), plain),
        (make_key("w1"), compute_that_uses_the_cache),
        (make_key("bad"), failing),
        (make_key("w2"), plain),
    ])
    assert (report.computed, report.skipped, report.failed, report.stopped) == (2, 1, 1, False)
    assert observed == [True] and plain.calls == 1 and failing_calls == [1]
    assert_embeds_equal(cache.get(make_key("w1")), sd_embeds(4))
    s = cache.stats()
    assert (s.hits, s.misses) == (2, 0)  # the observer's get and ours; warming counts nothing


def test_warm_stops_when_asked():
    cache = EmbeddingCache(max_bytes=1 << 20)
    compute = Counter(sd_embeds(0))
    jobs = [(make_key(f"p{i}"), compute) for i in range(5)]
    report = cache.warm(jobs, should_stop=lambda: compute.calls >= 2)
    assert report.stopped and report.computed == 2 and compute.calls == 2


# -- persistence -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_disk_round_trip_is_bit_exact(tmp_path, dtype):
    key = make_key(options={"family": "sdxl", "do_cfg": True})
    value = {
        "prompt_embeds": torch.cat([torch.randn(1, 3, 8).to(dtype), special_values(dtype).view(1, 1, 8)], dim=1),
        "negative_prompt_embeds": torch.randn(1, 4, 8).to(dtype),
        "pooled_prompt_embeds": torch.randn(1, 8).to(dtype),
        "negative_pooled_prompt_embeds": torch.randn(1, 8).to(dtype)[:, ::2],  # non-contiguous input
    }
    first = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path / "cache")
    compute = Counter(value, delay_s=0.02)
    first.get_or_compute(key, compute)
    assert first.stats().disk_entries == 1
    assert (tmp_path / "cache" / f"{key.digest()}.safetensors").is_file()

    second = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path / "cache")
    loaded = second.get_or_compute(key, compute)
    assert compute.calls == 1
    assert_embeds_equal(loaded, value)
    assert loaded["prompt_embeds"].dtype == dtype
    s = second.stats()
    assert (s.hits, s.misses, s.disk_hits, s.entries) == (1, 0, 1, 1)
    assert_embeds_equal(second.get(key), value)  # now from RAM
    assert second.stats().disk_hits == 1


def test_disk_round_trip_of_zimage_lists(tmp_path):
    key_cfg = make_key(options={"family": "zimage", "do_cfg": True, "max_sequence_length": 512})
    key_turbo = make_key(options={"family": "zimage", "do_cfg": False, "max_sequence_length": 512})
    with_cfg = {
        "prompt_embeds": [torch.randn(7, 16).to(torch.bfloat16), torch.randn(12, 16).to(torch.bfloat16)],
        "negative_prompt_embeds": [torch.randn(3, 16).to(torch.bfloat16), torch.randn(0, 16).to(torch.bfloat16)],
    }
    turbo = {"prompt_embeds": [torch.randn(5, 16).to(torch.bfloat16)], "negative_prompt_embeds": []}
    writer = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    writer.put(key_cfg, with_cfg, compute_s=1.5)
    writer.put(key_turbo, turbo)
    reader = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    assert_embeds_equal(reader.get(key_cfg), with_cfg)
    assert_embeds_equal(reader.get(key_turbo), turbo)
    assert reader.stats().time_saved_s > 1.0  # the compute time travelled with the file


def _write_entry(tmp_path: Path, key: CacheKey, value: dict) -> Path:
    EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path).put(key, value)
    path = tmp_path / f"{key.digest()}.safetensors"
    assert path.is_file()
    return path


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "other_key", "bad_structure"])
def test_bad_file_is_ignored_and_removed(tmp_path, caplog, damage):
    key = make_key()
    path = _write_entry(tmp_path, key, sd_embeds(0))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other_key":
        other = _write_entry(tmp_path, make_key("another prompt"), sd_embeds(1))
        os.replace(other, path)  # a valid file under the wrong name
    elif damage == "bad_structure":
        import safetensors.torch

        data = path.read_bytes()
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len])["__metadata__"]
        meta["structure"] = json.dumps({"prompt_embeds": {"kind": "list", "len": 3}})
        safetensors.torch.save_file(sd_embeds(0), path, metadata=meta)

    cache = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    compute = Counter(sd_embeds(2))
    with caplog.at_level(logging.WARNING, logger="modules.embedding_cache"):
        out = cache.get_or_compute(key, compute)
    assert compute.calls == 1
    assert_embeds_equal(out, sd_embeds(2))
    assert any("ignoring" in r.getMessage() for r in caplog.records)
    # the bad file was replaced by the fresh entry
    fresh = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    assert_embeds_equal(fresh.get(key), sd_embeds(2))


def test_disk_is_bounded_and_oldest_files_go_first(tmp_path):
    value = sd_embeds(0, tokens=16)
    probe = _write_entry(tmp_path / "probe", make_key("probe"), value)
    file_size = probe.stat().st_size
    cache = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path / "c", max_disk_bytes=3 * file_size)
    keys = [make_key(f"p{i}") for i in range(5)]
    for i, key in enumerate(keys):
        cache.put(key, value)
        path = tmp_path / "c" / f"{key.digest()}.safetensors"
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # deterministic age order
    # a fresh cache (another process) sees the file times
    fresh = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path / "c", max_disk_bytes=3 * file_size)
    s = fresh.stats()
    assert s.disk_entries <= 3 and s.disk_bytes <= 3 * file_size
    assert fresh.contains(keys[4])
    assert not fresh.contains(keys[0])
    fresh.get(keys[2])  # a load refreshes the file's age
    fresh.put(make_key("new"), value)
    names = {p.name for p in (tmp_path / "c").iterdir()}
    assert f"{keys[2].digest()}.safetensors" in names
    assert f"{make_key('new').digest()}.safetensors" in names
    assert f"{keys[3].digest()}.safetensors" not in names  # the oldest untouched file went
    assert len(names) == 3


def test_construction_is_lazy(tmp_path):
    folder = tmp_path / "not-yet"
    cache = EmbeddingCache(max_bytes=1 << 20, persist_dir=folder)
    assert not folder.exists()
    assert cache.get(make_key()) is None
    assert not folder.exists()
    cache.put(make_key(), sd_embeds(0))
    assert folder.is_dir()


def test_stale_temp_files_are_cleaned(tmp_path):
    stale = tmp_path / ".abc.123.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (1_000_000, 1_000_000))
    recent = tmp_path / ".def.456.tmp"
    recent.write_bytes(b"being written")
    cache = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    assert cache.stats().disk_entries == 0
    assert not stale.exists() and recent.exists()


# -- real pipelines (tiny, random weights, built offline) ------------------------------------

def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE tokenizers use for raw bytes."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def _tiny_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _tiny_clip_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=3, vocab_size=600,
        max_position_embeddings=77, **extra,
    )


def _tiny_vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 32], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=latent_channels, norm_num_groups=32, layers_per_block=1, **extra,
    )


def _shared_tiny_pipeline(family: str):
    """The project's tiny pipeline when ``modules.tiny`` provides one; else ``None`` (built inline)."""
    try:
        from modules.tiny.components import tiny_pipeline
    except ImportError:
        return None
    pipe = tiny_pipeline(family, seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd15_pipe(tmp_path_factory):
    shared = _shared_tiny_pipeline("sd15")
    if shared is not None:
        return shared
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_tiny_clip_config())
    pipe = StableDiffusionPipeline(
        unet=unet, scheduler=DDIMScheduler(), vae=_tiny_vae(), text_encoder=text_encoder,
        tokenizer=_tiny_clip_tokenizer(tmp_path_factory.mktemp("tok")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl_pipe(tmp_path_factory):
    shared = _shared_tiny_pipeline("sdxl")
    if shared is not None:
        return shared
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=32,
    )
    torch.manual_seed(0)
    te1 = CLIPTextModel(_tiny_clip_config(projection_dim=32, hidden_act="gelu"))
    torch.manual_seed(1)
    te2 = CLIPTextModelWithProjection(_tiny_clip_config(projection_dim=32, hidden_act="gelu"))
    tok = _tiny_clip_tokenizer(tmp_path_factory.mktemp("tokxl"))
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
        unet=unet, scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def zimage_pipe(tmp_path_factory):
    shared = _shared_tiny_pipeline("zimage")
    if shared is not None:
        return shared
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0,
        t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # created with torch.empty: give them defined values
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    torch.manual_seed(0)
    text_encoder = Qwen3Model(Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=300, max_position_embeddings=256,
    ))
    folder = tmp_path_factory.mktemp("qwen-tok")
    chars = _byte_chars()
    vocab = chars + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = Qwen2Tokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>", chat_template=template,
    )
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(16, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe, seed: int, **kwargs) -> torch.Tensor:
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(generator=generator, output_type="pt", **kwargs).images


def test_sd15_cached_embeds_reproduce_the_image(sd15_pipe, tmp_path):
    pipe = sd15_pipe
    prompt, negative = "a portrait of a woman, soft light", "blurry"
    common = dict(num_inference_steps=2, guidance_scale=7.0, height=32, width=32)
    reference = _image(pipe, 123, prompt=prompt, negative_prompt=negative, **common)

    def compute():
        pos, neg = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg}

    key = make_key(prompt, negative_prompt=negative)
    cache = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path)
    cached = cache.get_or_compute(key, compute, device="cpu", dtype=pipe.text_encoder.dtype)
    assert torch.equal(_image(pipe, 123, **cached, **common), reference)

    from_disk = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path).get(key)
    assert torch.equal(_image(pipe, 123, **from_disk, **common), reference)
    other_seed = _image(pipe, 124, **from_disk, **common)
    assert not torch.equal(other_seed, reference)  # the comparison can fail


def test_sdxl_cached_embeds_reproduce_the_image(sdxl_pipe, tmp_path):
    pipe = sdxl_pipe
    prompt, negative = "studio headshot", "lowres"
    common = dict(num_inference_steps=2, guidance_scale=5.0, height=32, width=32)
    reference = _image(pipe, 7, prompt=prompt, negative_prompt=negative, **common)

    def compute():
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt, device="cpu", do_classifier_free_guidance=True, negative_prompt=negative
        )
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg,
                "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}

    key = make_key(prompt, negative_prompt=negative, options={"family": "sdxl", "do_cfg": True})
    EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path).get_or_compute(key, compute)
    from_disk = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path).get(key, device="cpu")
    assert set(from_disk) == {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                              "negative_pooled_prompt_embeds"}
    assert torch.equal(_image(pipe, 7, **from_disk, **common), reference)


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_zimage_cached_embeds_reproduce_the_image(zimage_pipe, tmp_path, guidance):
    pipe = zimage_pipe
    prompt, negative = "a smiling face", "bad quality, extra fingers"
    do_cfg = guidance > 1.0
    common = dict(num_inference_steps=2, guidance_scale=guidance, height=32, width=32, max_sequence_length=128)
    reference = _image(pipe, 5, prompt=prompt, negative_prompt=negative, **common)

    def compute():
        pos, neg = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=do_cfg,
                                      negative_prompt=negative, max_sequence_length=128)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg}

    key = make_key(prompt, negative_prompt=negative, clip_skip=0,
                   options={"family": "zimage", "do_cfg": do_cfg, "max_sequence_length": 128})
    EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path).get_or_compute(key, compute)
    from_disk = EmbeddingCache(max_bytes=1 << 20, persist_dir=tmp_path).get(key, device="cpu")
    assert isinstance(from_disk["prompt_embeds"], list)
    assert len(from_disk["negative_prompt_embeds"]) == (1 if do_cfg else 0)
    if do_cfg:  # variable lengths survive the round trip
        assert from_disk["prompt_embeds"][0].shape[0] != from_disk["negative_prompt_embeds"][0].shape[0]
    assert torch.equal(_image(pipe, 5, **from_disk, **common), reference)
