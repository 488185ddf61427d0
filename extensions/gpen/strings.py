"""The extension's strings by key (``gpen.…``), in English and Chinese: page labels, errors and notes.
Torch-free.

They go through Visage's keyed messages (:mod:`modules.messages`): :func:`register_strings` adds
:data:`CATALOG` with ``add_catalog`` when the extension loads (``main.register``); an error or note is a
``Message("gpen.…", **params)`` (made with :func:`msg`), so its English is ``str()`` (logs, the CLI, the API's
``detail``) and the page says it in its own language by key. They are kept here, not in the page's tables,
so the extension stays one folder.
"""
from __future__ import annotations

from typing import Any

from modules.messages import Message, add_catalog, catalog, render

CATALOG: dict[str, dict[str, str]] = {
    "en": {
        # page
        "gpen.postprocessor": "Restore faces (GPEN)",
        "gpen.tab": "Restore faces",
        "gpen.intro": "Restore the faces in a photo with GPEN: faces are found, aligned, restored and blended "
                      "back. Weights go into `models/GPEN/` (see models/GPEN/README.md).",
        "gpen.input": "Photo",
        "gpen.output": "Restored",
        "gpen.model": "Model",
        "gpen.max_side": "Detect on a copy with long side (0 = full size)",
        "gpen.tile": "Detection tile size (0 = off)",
        "gpen.upscale": "Upscale the whole image first",
        "gpen.strength": "Strength",
        "gpen.fp16": "FP16 (GPU only)",
        "gpen.run": "Restore faces",
        "gpen.queued": "Waiting in the queue…",
        "gpen.progress": "{phase} {step}/{total}",
        "gpen.phase.loading": "loading the model",
        "gpen.phase.detecting": "finding faces",
        "gpen.phase.restoring": "restoring faces",
        "gpen.done": "{n} face(s) restored with {model} on {device} ({dtype}) in {seconds:.1f} s",
        "gpen.no_image": "Upload a photo first.",
        # InvalidRequest rules
        "gpen.rule.off_or_64": "must be 0 (off) or at least 64",
        "gpen.rule.device": "one of auto, cpu, cuda",
        "gpen.rule.upscale": "must be 1..4",
        "gpen.rule.at_least_1": "must be at least 1",
        "gpen.rule.output_over": "output over {mp} MP",
        "gpen.rule.unknown_model": "unknown GPEN model {name!r}; one of {choices}",
        "gpen.rule.unknown_detector": "unknown face detector {name!r}; one of auto, haar, mtcnn, retinaface",
        "gpen.rule.image_over": "{width}x{height} is over {mp} megapixels",
        "gpen.rule.unreadable": "is not a readable image",
        "gpen.rule.no_input": "{path} does not exist",
        "gpen.rule.no_images": "no images ({suffixes}) in {path}",
        # other errors
        "gpen.weights_missing": "GPEN weights not found: models/{subdir}/{file} (looked for {path}). Download the "
                                "officially released {file} from the GPEN project (yangxy/GPEN README; licence: "
                                "non-commercial use only) and put it into {folder}/ — see models/GPEN/README.md",
        "gpen.haar_missing": "OpenCV's Haar cascades are missing under {root}: "
                             "install opencv-python-headless 4.x (5.x ships none)",
        "gpen.retinaface_missing": "RetinaFace weights not found: models/{subdir}/{file} (looked for {path}); put "
                                   "the RetinaFace-R50.pth upstream GPEN uses there, or use the built-in detector "
                                   "(haar)",
        # notes
        "gpen.note.fp16_cpu": "fp16 needs a CUDA device: ran in fp32 on the CPU",
    },
    "zh": {
        "gpen.postprocessor": "面部修复 (GPEN)",
        "gpen.tab": "面部修复",
        "gpen.intro": "用 GPEN 修复照片中的人脸：检测、对齐、修复并融合回原图。权重文件放在 `models/GPEN/`"
                      "（见 models/GPEN/README.md）。",
        "gpen.input": "照片",
        "gpen.output": "修复结果",
        "gpen.model": "模型",
        "gpen.max_side": "检测时缩放到的最长边（0 = 原尺寸）",
        "gpen.tile": "检测分块大小（0 = 不分块）",
        "gpen.upscale": "先整体放大倍数",
        "gpen.strength": "强度",
        "gpen.fp16": "FP16（仅 GPU）",
        "gpen.run": "修复人脸",
        "gpen.queued": "排队中…",
        "gpen.progress": "{phase} {step}/{total}",
        "gpen.phase.loading": "加载模型",
        "gpen.phase.detecting": "检测人脸",
        "gpen.phase.restoring": "修复人脸",
        "gpen.done": "已用 {model} 在 {device}（{dtype}）上修复 {n} 张人脸，用时 {seconds:.1f} 秒",
        "gpen.no_image": "请先上传照片。",
        "gpen.rule.off_or_64": "必须为 0（关闭）或至少 64",
        "gpen.rule.device": "只能是 auto、cpu、cuda",
        "gpen.rule.upscale": "必须在 1 到 4 之间",
        "gpen.rule.at_least_1": "至少为 1",
        "gpen.rule.output_over": "输出超过 {mp} 百万像素",
        "gpen.rule.unknown_model": "未知的 GPEN 模型 {name!r}；可选：{choices}",
        "gpen.rule.unknown_detector": "未知的人脸检测器 {name!r}；可选：auto、haar、mtcnn、retinaface",
        "gpen.rule.image_over": "{width}x{height} 超过 {mp} 百万像素",
        "gpen.rule.unreadable": "不是可读取的图片",
        "gpen.rule.no_input": "{path} 不存在",
        "gpen.rule.no_images": "{path} 中没有图片（{suffixes}）",
        "gpen.weights_missing": "找不到 GPEN 权重：models/{subdir}/{file}（查找位置 {path}）。请从 GPEN 项目下载官方发布的 "
                                "{file}（见 yangxy/GPEN 的 README；许可：仅限非商业用途），放到 {folder}/ 中——"
                                "见 models/GPEN/README.md",
        "gpen.haar_missing": "{root} 下缺少 OpenCV 的 Haar 级联文件：请安装 opencv-python-headless 4.x（5.x 不带这些文件）",
        "gpen.retinaface_missing": "找不到 RetinaFace 权重：models/{subdir}/{file}（查找位置 {path}）；请把上游 GPEN "
                                   "使用的 RetinaFace-R50.pth 放到那里，或改用内置检测器（haar）",
        "gpen.note.fp16_cpu": "FP16 需要 CUDA 设备：已在 CPU 上以 FP32 运行",
    },
}


def register_strings() -> None:
    """Add :data:`CATALOG` to Visage's keyed messages (once; called when the extension loads)."""
    if "gpen.tab" not in catalog("en"):
        add_catalog(CATALOG)


def msg(key: str, /, **params: Any) -> Message:
    """The keyed message ``key`` (a ``gpen.…`` key of :data:`CATALOG`) with ``params``."""
    register_strings()  # the extension's modules are also used without loading it (tests, scripts)
    return Message(key, **params)


def text(key: str, lang: str, **params: Any) -> str:
    """The page string ``gpen.<key>`` in ``lang``."""
    register_strings()
    return render(f"gpen.{key}", params, lang)


def say(note: str, lang: str) -> str:
    """A note or message in ``lang`` when it is keyed, else as it is."""
    return note.render(lang) if isinstance(note, Message) else str(note)
