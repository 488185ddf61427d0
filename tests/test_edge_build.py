"""build-edge on the tiny SD1.5 model: packages with and without pruning/INT8, manifest, registry listing,
pruned U-Net shapes, LoRA merge, refusals, and broken/partial packages."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fixtures_models import make_folders
from modules.cli import main as cli_main
from modules.edge.build import EdgeBuildOptions, build_edge_for, default_name
from modules.edge.manifest import check_package
from modules.edge.prune import prune_unet
from modules.edge.runtime import EdgePipeline
from modules.errors import Interrupted, InvalidRequest, MissingComponent, ModelLoadError, UnsupportedModel
from modules.families import Family
from modules.registry import HashCache, ModelRegistry
from modules.registry.entry import ModelFormat
from modules.taesd import random_taesd

TINY_BUILD = dict(calib_prompts=1, calib_steps=2, calib_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """models/ with a tiny SD1.5 (diffusers), a tiny SDXL, a random TAESD in VAE-approx and a tiny LoRA."""
    from modules.tiny import install_tiny_clip_tokenizer, make_tiny_model

    folders = make_folders(tmp_path_factory.mktemp("edge-build"))
    install_tiny_clip_tokenizer(folders)
    make_tiny_model("sd15", "diffusers", folders.checkpoints / "tiny15")
    make_tiny_model("sdxl", "single-file", folders.checkpoints / "tinyxl")
    random_taesd(Family.SD15, seed=0).save_pretrained(str(folders.vae_approx / "taesd"))
    folders.lora.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    lora = {}
    for key, (n_in, n_out) in {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (64, 64),
                               "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (32, 32)}.items():
        lora[f"{key}.lora_down.weight"] = torch.randn(4, n_in, generator=gen) * 0.5
        lora[f"{key}.lora_up.weight"] = torch.randn(n_out, 4, generator=gen) * 0.5
        lora[f"{key}.alpha"] = torch.tensor(4.0)
    save_file(lora, str(folders.lora / "tinylora.safetensors"))
    cache = HashCache(folders.cache / "hashes.json")
    registry = ModelRegistry(folders, cache, hf_cache=folders.cache / "no-hf")
    return folders, registry, cache


def build(env, name: str, **options):
    folders, registry, cache = env
    entry = registry.get(options.pop("model", "tiny15"))
    stages = []
    path = build_edge_for(entry, folders, name, EdgeBuildOptions(**{**TINY_BUILD, **options}),
                          hf_cache=folders.cache / "no-hf", hash_cache=cache,
                          on_progress=lambda label, i, n: stages.append((label, i, n)))
    return path, stages


@pytest.fixture(scope="module")
def fp32_package(env):
    """Built through the command line, as a user would."""
    folders, _, _ = env
    code = cli_main(["build-edge", "--model", "tiny15", "--quantize", "none", "--out", "fp32",
                     "--models-dir", str(folders.models), "--cache-dir", str(folders.cache)])
    assert code == 0
    return folders.edge / "fp32"


@pytest.fixture(scope="module")
def pruned_int8_package(env):
    return build(env, "p50-int8", prune=0.5, quantize="int8", distill_steps=2, distill_latent=8)


def generate(package, size: int = 64, seed: int = 3, output_type: str = "pil"):
    pipe = EdgePipeline(package)
    embeds = pipe.encode_prompts("a portrait photo", "", False, 1)
    return pipe(prompt_embeds=embeds["prompt_embeds"], height=size, width=size, num_inference_steps=2,
                guidance_scale=1.0, generator=[torch.Generator().manual_seed(seed)], output_type=output_type).images


def test_fp32_package_manifest_and_registry(env, fp32_package):
    folders, registry, _ = env
    data = check_package(fp32_package)
    assert data["format"] == "visage-edge" and data["family"] == "sd15"
    assert data["source"]["name"] == "tiny15" and len(data["source"]["hash"]) == 10
    assert data["loras"] == [] and data["prune"]["ratio"] == 0.0
    assert data["quantization"]["mode"] == "none" and data["components"]["unet"]["precision"] == "fp32"
    assert set(data["components"]) == {"text_encoder", "unet", "taesd_decoder"}
    assert {"torch", "onnx", "onnxruntime", "opset", "seconds", "steps"} <= set(data["build"])
    assert data["build"]["opset"] == 17
    on_disk = {p.relative_to(fp32_package).as_posix(): p.stat().st_size
               for p in fp32_package.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert data["files"] == on_disk and data["total_bytes"] == sum(on_disk.values())
    assert not [p for p in folders.edge.iterdir() if p.name.startswith(".")]  # no temp folder left
    entry = registry.refresh()
    edge = next(e for e in entry if e.name == "edge/fp32")
    assert edge.format == ModelFormat.EDGE and edge.supported and edge.family is Family.SD15
    images = generate(fp32_package)
    assert len(images) == 1 and isinstance(images[0], Image.Image)


def test_pruned_int8_package_builds_and_generates(pruned_int8_package, fp32_package):
    path, stages = pruned_int8_package
    labels = [s[0] for s in stages]
    for label in ("merging LoRAs", "pruning", "recording calibration inputs", "exporting U-Net", "quantizing",
                  "writing package", "done"):
        assert label in labels
    assert any(label.startswith("distilling 1/2") for label in labels)
    assert stages[-1][1] == stages[-1][2]  # progress ends at total
    data = json.loads((path / "manifest.json").read_text())
    assert data["prune"]["ratio"] == 0.5 and data["prune"]["params_after"] < data["prune"]["params_before"]
    assert data["prune"]["distill"]["steps"] == 2
    assert data["quantization"]["unet_method"] == "static" and data["quantization"]["calibration_samples"] == 2
    assert data["components"]["unet"]["precision"] == "int8-static"
    assert data["components"]["text_encoder"]["precision"] == "int8-dynamic"
    assert data["components"]["taesd_decoder"]["precision"] == "int8-static"
    # the INT8 TAESD decodes like the fp32 one (same random TAESD in both packages)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    int8 = EdgePipeline(path).decoder("taesd").decode_tensor(latents)
    fp32 = EdgePipeline(fp32_package).decoder("taesd").decode_tensor(latents)
    assert int8.shape == fp32.shape and float((int8 - fp32).abs().max()) < 0.05
    fp32_bytes = json.loads((fp32_package / "manifest.json").read_text())["files"]["unet.onnx"]
    assert data["files"]["unet.onnx"] < fp32_bytes
    assert not list(path.glob("*fp32*")) and not list(path.glob("*inferred*"))  # intermediates removed
    images = generate(path, size=96)
    assert images[0].size == generate(path, size=96)[0].size  # deterministic shape at a new size


def test_dynamic_int8_with_full_vae(env):
    path, _ = build(env, "dyn", quantize="int8", method="dynamic", full_vae=True)
    data = check_package(path)
    assert data["components"]["unet"]["precision"] == "int8-dynamic"
    assert "vae_decoder" in data["components"]
    pipe = EdgePipeline(path)
    assert pipe.decoder("vae") is pipe.decoders["vae_decoder"]
    assert pipe.decoder("taesd") is pipe.decoders["taesd_decoder"]
    vae_img = generate(path)[0]
    assert vae_img.size == (64, 64)  # the full VAE decodes at the image size


def test_lora_is_merged_and_recorded(env, fp32_package):
    path, _ = build(env, "with-lora", quantize="none", loras=[("tinylora", 1.0, 1.0)])
    data = check_package(path)
    assert [x["name"] for x in data["loras"]] == ["tinylora"]
    assert data["loras"][0]["unet_weight"] == 1.0 and len(data["loras"][0]["hash"]) == 12
    base = generate(fp32_package, output_type="latent")
    merged = generate(path, output_type="latent")
    assert (base - merged).abs().max() > 1e-2  # the LoRA changed the result
    assert torch.allclose(base, generate(fp32_package, output_type="latent"))


def test_cancel_mid_build_leaves_no_package_and_no_temp(env):
    folders, registry, cache = env
    labels = []
    with pytest.raises(Interrupted):
        build_edge_for(registry.get("tiny15"), folders, "cancelled", EdgeBuildOptions(**TINY_BUILD, quantize="none"),
                       hf_cache=folders.cache / "no-hf", hash_cache=cache,
                       on_progress=lambda label, i, n: labels.append(label),
                       should_stop=lambda: "exporting U-Net" in labels)
    assert labels[-1] == "exporting U-Net"  # stopped as the next stage was due
    assert not (folders.edge / "cancelled").exists()
    assert not [p for p in folders.edge.iterdir() if p.name.startswith(".")]


def test_pruned_unet_keeps_valid_shapes_and_runs():
    from modules.tiny.components import tiny_sd15

    unet = tiny_sd15(0).unet.eval()
    original = copy.deepcopy(unet)
    report = prune_unet(unet, 0.5)
    assert report.groups_pruned > 0 and not report.groups_skipped
    assert report.params_after < report.params_before
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            assert module.conv1.out_channels % module.norm2.num_groups == 0
            assert module.norm2.num_channels == module.conv1.out_channels == module.conv2.in_channels
            assert module.time_emb_proj.out_features == module.conv1.out_channels
        if isinstance(module, Attention):
            assert module.to_q.out_features % module.heads == 0
            assert module.to_q.out_features == module.to_k.out_features == module.to_v.out_features
            assert module.to_out[0].in_features == module.to_q.out_features
    pruned_q = [m.to_q.out_features for m in unet.modules() if isinstance(m, Attention)]
    full_q = [m.to_q.out_features for m in original.modules() if isinstance(m, Attention)]
    assert all(p < f for p, f in zip(pruned_q, full_q))
    with torch.no_grad():
        for size in (16, 24):  # other resolutions than the traced one
            x = torch.randn(2, 4, size, size)
            out = unet(x, torch.tensor([10.0, 900.0]), torch.randn(2, 77, 32)).sample
            assert out.shape == x.shape and torch.isfinite(out).all()


def test_refusals(env, fp32_package, tmp_path):
    folders, registry, cache = env
    entry = registry.get("tiny15")
    with pytest.raises(InvalidRequest, match="already exists"):
        build_edge_for(entry, folders, "fp32", EdgeBuildOptions(quantize="none"), hash_cache=cache)
    with pytest.raises(UnsupportedModel, match="SD1.5"):
        build_edge_for(registry.get("tinyxl"), folders, "xl", EdgeBuildOptions(), hash_cache=cache)
    with pytest.raises(InvalidRequest, match="prune"):
        EdgeBuildOptions(distill_steps=5).check()
    with pytest.raises(InvalidRequest, match="out"):
        build_edge_for(entry, folders, "../escape", EdgeBuildOptions(quantize="none"), hash_cache=cache)
    other = make_folders(tmp_path)  # no TAESD here
    shutil.copytree(folders.checkpoints / "tiny15", other.checkpoints / "tiny15")
    with pytest.raises(MissingComponent, match="madebyollin/taesd"):
        build_edge_for(ModelRegistry(other, HashCache(other.cache / "h.json")).get("tiny15"), other, "x",
                       EdgeBuildOptions(quantize="none"), hf_cache=other.cache / "no-hf")
    assert default_name(entry, EdgeBuildOptions(prune=0.3)) == "tiny15-p30-int8"


def test_broken_or_partial_package_gives_a_clear_error(env, fp32_package, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(fp32_package, broken)
    (broken / "unet.onnx").write_bytes((broken / "unet.onnx").read_bytes()[:1000])  # truncated copy
    with pytest.raises(ModelLoadError, match="incomplete edge package: unet.onnx has 1000 bytes"):
        EdgePipeline(broken)
    (broken / "taesd_decoder.onnx").unlink()
    with pytest.raises(ModelLoadError, match="taesd_decoder.onnx is missing"):
        check_package(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        check_package(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        check_package(broken)
    # a package whose graph is garbage but whose sizes match: onnxruntime's refusal, named
    garbage = tmp_path / "garbage"
    shutil.copytree(fp32_package, garbage)
    size = (garbage / "unet.onnx").stat().st_size
    (garbage / "unet.onnx").write_bytes(b"\0" * size)
    with pytest.raises(ModelLoadError, match="garbage/unet.onnx: onnxruntime cannot load it"):
        EdgePipeline(garbage)


@pytest.mark.parametrize("attention", ["fused", "standard"])
def test_unet_export_attention_kinds_match_torch(tmp_path, attention):
    """Both exports of the U-Net give torch's result; "fused" really uses ORT's MultiHeadAttention."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from modules.edge.export import export_unet
    from modules.tiny.components import tiny_pipeline

    unet = tiny_pipeline(Family.SD15).unet.eval()
    files = export_unet(unet, tmp_path / "unet.onnx", attention=attention)
    ops = {n.op_type for n in onnx.load(str(files[0])).graph.node}
    assert ("MultiHeadAttention" in ops) == (attention == "fused")
    assert ("Softmax" in ops) == (attention == "standard")
    x, t, e = torch.randn(2, 4, 16, 24), torch.tensor([500.0, 20.0]), torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        ref = unet(x, t, e).sample.numpy()
    session = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    out = session.run(None, {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": e.numpy()})[0]
    assert np.abs(out - ref).max() < 1e-4


def test_static_int8_leaves_activation_matmuls_alone():
    """Only MatMuls with a constant weight are quantized; a MatMul of two activations (attention scores) is not."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from modules.edge.quantize import weight_nodes

    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["a"], name="proj"),
         helper.make_node("MatMul", ["a", "x"], ["s"], name="scores"),
         helper.make_node("Softmax", ["s"], ["y"], name="softmax"),
         helper.make_node("Conv", ["img", "k"], ["c"], name="conv")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8]),
              helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])],
        initializer=[w, numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "k")])
    assert [n.name for n in weight_nodes(graph, ("Conv", "MatMul", "Gemm"))] == ["proj", "conv"]


def test_openvino_refuses_a_fused_attention_package(fp32_package):
    data = check_package(fp32_package)
    assert data["components"]["unet"]["attention"] == "fused"
    with pytest.raises(UnsupportedModel, match="--attention standard"):
        EdgePipeline(fp32_package, engine="openvino")
