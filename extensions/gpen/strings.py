"""The extension's own page strings, English and Chinese (kept here, not in modules/ui/i18n.py, so the
extension stays one folder). Torch-free."""
from __future__ import annotations

STRINGS: dict[str, tuple[str, str]] = {
    "postprocessor": ("Restore faces (GPEN)", "面部修复 (GPEN)"),
    "tab": ("Restore faces", "面部修复"),
    "intro": ("Restore the faces in a photo with GPEN: faces are found, aligned, restored and blended back. "
              "Weights go into `models/GPEN/` (see models/GPEN/README.md).",
              "用 GPEN 修复照片中的人脸：检测、对齐、修复并融合回原图。权重文件放在 `models/GPEN/`（见 models/GPEN/README.md）。"),
    "input": ("Photo", "照片"),
    "output": ("Restored", "修复结果"),
    "model": ("Model", "模型"),
    "max_side": ("Detect on a copy with long side (0 = full size)", "检测时缩放到的最长边（0 = 原尺寸）"),
    "tile": ("Detection tile size (0 = off)", "检测分块大小（0 = 不分块）"),
    "upscale": ("Upscale the whole image first", "先整体放大倍数"),
    "strength": ("Strength", "强度"),
    "fp16": ("FP16 (GPU only)", "FP16（仅 GPU）"),
    "run": ("Restore faces", "修复人脸"),
    "queued": ("Waiting in the queue…", "排队中…"),
    "progress": ("{phase} {step}/{total}", "{phase} {step}/{total}"),
    "phase.loading": ("loading the model", "加载模型"),
    "phase.detecting": ("finding faces", "检测人脸"),
    "phase.restoring": ("restoring faces", "修复人脸"),
    "done": ("{n} face(s) restored with {model} on {device} ({dtype}) in {seconds:.1f} s",
             "已用 {model} 在 {device}（{dtype}）上修复 {n} 张人脸，用时 {seconds:.1f} 秒"),
    "no_image": ("Upload a photo first.", "请先上传照片。"),
}


def text(key: str, lang: str, **kwargs) -> str:
    en, zh = STRINGS[key]
    s = zh if lang == "zh" else en
    return s.format(**kwargs) if kwargs else s
