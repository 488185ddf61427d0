"""LoRA format/family detection from safetensors headers (torch-free), scanning and hashing."""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from modules.families import Family
from modules.lora import LoraError, LoraFormat, check_compatible, find_lora, inspect_lora, scan_loras
from modules.lora.formats import analyze_keys
from modules.lora.scan import addnet_sha256, ensure_hashes, lora_hashes

REPO = Path(__file__).resolve().parents[1]

F32 = 4


def write_fake_safetensors(path: Path, tensors: dict[str, tuple[int, ...]], metadata: dict | None = None,
                           fill: bytes = b"\x00") -> Path:
    """A valid safetensors file (F32, constant bytes) written without torch or numpy."""
    header: dict = {}
    offset = 0
    for name, shape in tensors.items():
        n = F32
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + fill * offset)
    return path


def kohya_pair(module: str, din: int, dout: int, rank: int = 4, alpha: bool = True) -> dict:
    out = {f"{module}.lora_down.weight": (rank, din), f"{module}.lora_up.weight": (dout, rank)}
    if alpha:
        out[f"{module}.alpha"] = ()
    return out


def peft_pair(module: str, din: int, dout: int, rank: int = 4) -> dict:
    return {f"{module}.lora_A.weight": (rank, din), f"{module}.lora_B.weight": (dout, rank)}


SD15_ATTN = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
SDXL_ATTN = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"

CASES = {
    # name: (shapes, metadata, format, family, supported, rank, has_te, has_unet, alpha)
    "kohya sd15 real widths": (
        {**kohya_pair(SD15_ATTN, 768, 320), **kohya_pair("lora_te_text_model_encoder_layers_0_self_attn_q_proj",
                                                         768, 768)},
        None, LoraFormat.KOHYA, Family.SD15, True, 4, True, True, True),
    "kohya sd15 tiny widths (single text encoder)": (
        {**kohya_pair("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 64, 64, 8),
         **kohya_pair("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 32, 32)},
        None, LoraFormat.KOHYA, Family.SD15, True, 8, True, True, True),
    "kohya sdxl te1/te2": (
        {**kohya_pair("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 32, 32),
         **kohya_pair("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 64, 64)},
        None, LoraFormat.KOHYA, Family.SDXL, True, 4, True, False, True),
    "kohya sdxl context 2048": (
        kohya_pair(SDXL_ATTN, 2048, 640), None, LoraFormat.KOHYA, Family.SDXL, True, 4, False, True, True),
    "kohya sdxl sgm names, tiny": (
        kohya_pair("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 64, 64),
        None, LoraFormat.KOHYA, Family.SDXL, True, 4, False, True, True),
    "kohya sdxl by metadata": (
        kohya_pair("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 64, 64),
        {"ss_base_model_version": "sdxl_base_v1-0"}, LoraFormat.KOHYA, Family.SDXL, True, 4, False, True, True),
    "kohya sd2 refused": (
        kohya_pair(SD15_ATTN, 1024, 320), None, LoraFormat.KOHYA, None, False, 4, False, True, True),
    "kohya LoCon conv": (
        {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": (4, 320, 3, 3),
         "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": (320, 4, 1, 1),
         "lora_unet_down_blocks_0_resnets_0_conv1.alpha": (), **kohya_pair(SD15_ATTN, 768, 320)},
        None, LoraFormat.KOHYA, Family.SD15, True, 4, False, True, True),
    "kohya DoRA refused": (
        {**kohya_pair(SD15_ATTN, 768, 320), f"{SD15_ATTN}.dora_scale": (1, 768)},
        None, LoraFormat.KOHYA, Family.SD15, False, 4, False, True, True),
    "diffusers sd15 with metadata": (
        {**peft_pair("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 768, 320),
         **peft_pair("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", 768, 768)},
        {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 2})},
        LoraFormat.DIFFUSERS, Family.SD15, True, 4, True, True, True),
    "diffusers sdxl text_encoder_2, no alpha": (
        {**peft_pair("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 64, 64),
         **peft_pair("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj", 64, 64)},
        None, LoraFormat.DIFFUSERS, Family.SDXL, True, 4, True, True, False),
    "diffusers legacy attn-procs": (
        {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight": (4, 768),
         "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.up.weight": (320, 4)},
        None, LoraFormat.DIFFUSERS, Family.SD15, True, 4, False, True, False),
    "diffusers unet-only tiny: family unknown": (
        peft_pair("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 64, 64),
        None, LoraFormat.DIFFUSERS, None, True, 4, False, True, False),
    "z-image diffusion_model (AWPortrait-Z style, no alpha)": (
        {**peft_pair("diffusion_model.layers.0.attention.to_q", 3840, 3840, 32),
         **peft_pair("diffusion_model.layers.0.feed_forward.w1", 3840, 10240, 32)},
        None, LoraFormat.DIFFUSION_MODEL, Family.ZIMAGE, True, 32, False, True, False),
    "z-image diffusion_model lora_down/up": (
        kohya_pair("diffusion_model.layers.3.attention.to_k", 3840, 3840, 16, alpha=False),
        None, LoraFormat.DIFFUSION_MODEL, Family.ZIMAGE, True, 16, False, True, False),
    "z-image kohya lora_unet_layers": (
        kohya_pair("lora_unet_layers_0_attention_to_q", 32, 32),
        None, LoraFormat.KOHYA, Family.ZIMAGE, True, 4, False, True, True),
    "z-image diffusers transformer.": (
        peft_pair("transformer.noise_refiner.0.attention.to_q", 32, 32),
        None, LoraFormat.DIFFUSERS, Family.ZIMAGE, True, 4, False, True, False),
    "comfy diffusion_model for SD refused": (
        peft_pair("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k", 2048, 640),
        None, LoraFormat.DIFFUSION_MODEL, Family.SDXL, False, 4, False, True, False),
    "LoHa refused": (
        {f"{SD15_ATTN}.hada_w1_a": (320, 4), f"{SD15_ATTN}.hada_w1_b": (4, 768),
         f"{SD15_ATTN}.hada_w2_a": (320, 4), f"{SD15_ATTN}.hada_w2_b": (4, 768), f"{SD15_ATTN}.alpha": ()},
        None, LoraFormat.LOHA, None, False, 4, False, True, True),
    "LoKr on SD refused": (
        {f"{SD15_ATTN}.lokr_w1": (4, 4), f"{SD15_ATTN}.lokr_w2": (80, 192), f"{SD15_ATTN}.alpha": (),
         **kohya_pair("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768)},
        None, LoraFormat.LOKR, Family.SD15, False, 4, True, True, True),
    "LoKr for Z-Image": (
        {"diffusion_model.layers.0.attention.to_q.lokr_w1": (4, 4),
         "diffusion_model.layers.0.attention.to_q.lokr_w2": (8, 8)},
        None, LoraFormat.LOKR, Family.ZIMAGE, True, None, False, True, False),
    "LoCon Tucker (lora_mid) refused": (
        {**kohya_pair(SD15_ATTN, 768, 320), f"{SD15_ATTN}.lora_mid.weight": (4, 4, 3, 3)},
        None, LoraFormat.LYCORIS_OTHER, Family.SD15, False, 4, False, True, True),
    "unknown keys refused": (
        {"model.weight": (4, 4)}, None, LoraFormat.UNKNOWN, None, False, None, False, False, False),
    "cloneofsimo tiny": (
        {"unet:0:down": (1, 32), "unet:0:up": (32, 1), "text_encoder:0:down": (1, 32), "text_encoder:0:up": (32, 1)},
        None, LoraFormat.CLONEOFSIMO, None, True, 1, True, True, False),
    "cloneofsimo sd15 widths": (
        {"unet:6:down": (4, 768), "unet:6:up": (320, 4), "unet:4:down": (4, 320), "unet:4:up": (2560, 4)},
        None, LoraFormat.CLONEOFSIMO, Family.SD15, True, 4, False, True, False),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_detection_table(tmp_path, case):
    shapes, metadata, fmt, family, supported, rank, has_te, has_unet, alpha = CASES[case]
    path = write_fake_safetensors(tmp_path / "x.safetensors", shapes, metadata)
    info = inspect_lora(path)
    assert info.format == fmt
    assert info.family == family
    assert info.supported is supported, info.reason
    assert bool(info.reason) is (not supported)
    assert info.rank == rank
    assert info.has_text_encoder is has_te
    assert info.has_unet is has_unet
    assert info.alpha_present is alpha
    assert info.name == "x" and info.tensor_count == len(shapes)


def test_reasons_name_the_format(tmp_path):
    loha = inspect_lora(write_fake_safetensors(tmp_path / "l.safetensors", {f"{SD15_ATTN}.hada_w1_a": (320, 4)}))
    assert "LoHa" in loha.reason and "diffusers" in loha.reason
    lokr = analyze_keys({f"{SD15_ATTN}.lokr_w1": (4, 4), f"{SD15_ATTN}.lokr_w2": (80, 192), **kohya_pair(
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768)})
    assert "LoKr" in lokr.reason
    dora = analyze_keys({**kohya_pair(SD15_ATTN, 768, 320), f"{SD15_ATTN}.dora_scale": (1, 768)})
    assert "DoRA" in dora.reason
    sd2 = analyze_keys(kohya_pair(SD15_ATTN, 1024, 320))
    assert "2.x" in sd2.reason


def test_notes(tmp_path):
    no_alpha = analyze_keys(peft_pair("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 64, 64))
    assert any("alpha" in n for n in no_alpha.notes)
    clone = analyze_keys({"unet:0:down": (1, 768), "unet:0:up": (320, 1), "<s1>": (768,)}, {"<s1>": "<embed>"})
    assert clone.supported and any("<s1>" in n for n in clone.notes)
    odd = analyze_keys({"unet:0:down": (1, 768), "unet:0:up": (320, 1), "weird": (3,)})
    assert not odd.supported and "weird" in odd.reason


def test_unreadable_and_pickle_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    info = inspect_lora(bad)
    assert not info.supported and "unreadable" in info.reason
    pt = tmp_path / "old.pt"
    pt.write_bytes(b"PK\x03\x04 not opened")
    info = inspect_lora(pt)
    assert info.format == LoraFormat.PICKLE and not info.supported and ".safetensors" in info.reason


def test_compatibility_errors_name_both_families(tmp_path):
    sd15 = inspect_lora(write_fake_safetensors(tmp_path / "a.safetensors", kohya_pair(SD15_ATTN, 768, 320)))
    with pytest.raises(LoraError) as err:
        check_compatible(sd15, Family.SDXL)
    assert "SD 1.5" in str(err.value) and "SDXL" in str(err.value)
    check_compatible(sd15, "sd15")
    zi = inspect_lora(write_fake_safetensors(tmp_path / "z.safetensors",
                                             peft_pair("diffusion_model.layers.0.attention.to_q", 32, 32)))
    with pytest.raises(LoraError, match="Z-Image"):
        check_compatible(zi, Family.SD15)
    unknown_family = inspect_lora(write_fake_safetensors(
        tmp_path / "u.safetensors", peft_pair("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 8, 8)))
    check_compatible(unknown_family, Family.SDXL)  # unknown family: the patcher's layer matching decides


def test_scan_names_aliases_and_hashes(tmp_path):
    root = tmp_path / "Lora"
    (root / "styles").mkdir(parents=True)
    extra = tmp_path / "extra"
    extra.mkdir()
    a = write_fake_safetensors(root / "portrait.safetensors", kohya_pair(SD15_ATTN, 768, 320),
                               {"ss_output_name": "portrait_v2"}, fill=b"\x01")
    write_fake_safetensors(root / "styles" / "film grain.safetensors", kohya_pair(SD15_ATTN, 768, 320))
    write_fake_safetensors(extra / "portrait.safetensors", kohya_pair(SD15_ATTN, 768, 320), fill=b"\x02")
    (root / ".hidden.safetensors").write_bytes(b"")
    (root / "notes.txt").write_text("not a lora")
    infos = scan_loras([root, extra, tmp_path / "missing"])
    assert [i.rel_name for i in infos] == ["portrait", "styles/film grain", "portrait"]
    assert [i.name for i in infos] == ["portrait", "film grain", "portrait (2)"]  # first one keeps the name
    assert all(i.hash is None for i in infos)  # scanning never hashes
    assert find_lora(infos, "film grain").rel_name == "styles/film grain"
    assert find_lora(infos, "styles/film grain").rel_name == "styles/film grain"
    assert find_lora(infos, "portrait_v2").path == a
    assert find_lora(infos, "PORTRAIT").path == a
    with pytest.raises(Exception, match="not found"):
        find_lora(infos, "nope")

    info = ensure_hashes(infos[0])
    raw = a.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert info.addnet_sha256 == hashlib.sha256(raw[8 + n:]).hexdigest() == addnet_sha256(a)
    assert info.sha256 == hashlib.sha256(raw).hexdigest()
    assert info.hash == info.addnet_sha256[:12] and len(info.hash) == 12
    assert find_lora([info], info.hash).path == a
    # the addnet hash ignores metadata edits; the file hash does not
    b = write_fake_safetensors(tmp_path / "b.safetensors", kohya_pair(SD15_ATTN, 768, 320),
                               {"ss_output_name": "other"}, fill=b"\x01")
    assert lora_hashes(b).addnet_sha256 == info.addnet_sha256
    assert lora_hashes(b).sha256 != info.sha256


def test_hash_cache_is_used_when_given(tmp_path):
    hashing = pytest.importorskip("modules.registry.hashing")
    path = write_fake_safetensors(tmp_path / "a.safetensors", kohya_pair(SD15_ATTN, 768, 320))
    cache = hashing.HashCache(tmp_path / "hashes.json")
    h = lora_hashes(path, cache)
    assert cache.cached_sha256(path) == h.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_real_cloneofsimo_files(shared_assets):
    folder = shared_assets / "lora"
    disney = inspect_lora(folder / "cloneofsimo_lora_disney.safetensors")
    assert (disney.format, disney.family, disney.rank, disney.supported) == (
        LoraFormat.CLONEOFSIMO, Family.SD15, 1, True)
    assert disney.has_text_encoder and disney.has_unet
    assert any("<s1>" in n and "<s2>" in n for n in disney.notes)
    analog = inspect_lora(folder / "cloneofsimo_analog_svd_rank4.safetensors")
    assert (analog.format, analog.family, analog.rank, analog.supported) == (
        LoraFormat.CLONEOFSIMO, Family.SD15, 4, True)
    with pytest.raises(LoraError, match="SD 1.5"):
        check_compatible(analog, Family.SDXL)


def test_torch_free_imports():
    code = ("import sys; import modules.lora, modules.lora.formats, modules.lora.scan, modules.lora.prompt; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'safetensors') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
