"""Every string of the page, in English and Chinese, and the translator the tabs receive. Torch-free.

Tabs never hold literal UI text: they call ``t(key, **fields)``. Errors are translated by their
``VisageError.code`` (keys ``error.<code>``); the free-form ``rule`` of ``InvalidRequest`` is
translated when it matches one of the common rule shapes and shown as-is otherwise.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from modules.errors import Interrupted, InvalidRequest, VisageError

LANGUAGES = ("en", "zh")

EN: dict[str, str] = {
    "app.title": "Visage",
    # status line
    "status.idle": "⚪ No model loaded",
    "status.idle_message": "⚪ No model loaded: {message}",
    "status.loading": "⏳ Loading {model}…",
    "status.ready": "🟢 Ready · {model} · {family} · {device} {dtype}",
    "status.queue": " · {n} in queue",
    "status.error": "🔴 Error: {message}",
    "status.unknown_model": "(none)",
    # model picker
    "model.label": "Checkpoint",
    "model.refresh": "🔄",
    "model.switched": "Switched to {model}",
    # tabs
    "tab.txt2img": "txt2img",
    "tab.pnginfo": "PNG Info",
    "tab.models": "Models",
    # txt2img
    "txt2img.prompt": "Prompt",
    "txt2img.prompt_placeholder": "Describe the portrait",
    "txt2img.negative": "Negative prompt",
    "txt2img.negative_placeholder": "What to avoid",
    "txt2img.sampler": "Sampling method",
    "txt2img.steps": "Sampling steps",
    "txt2img.cfg": "CFG Scale",
    "txt2img.width": "Width",
    "txt2img.height": "Height",
    "txt2img.seed": "Seed",
    "txt2img.seed_info": "-1 = random",
    "txt2img.random_seed": "🎲",
    "txt2img.reuse_seed": "♻️",
    "txt2img.batch_size": "Batch size",
    "txt2img.batch_count": "Batch count",
    "txt2img.clip_skip": "Clip skip",
    "txt2img.generate": "Generate",
    "txt2img.interrupt": "Interrupt",
    "txt2img.gallery": "Output",
    "txt2img.infotext": "Generation info",
    "txt2img.interrupt_sent": "Interrupt requested",
    "txt2img.nothing_running": "Nothing is running",
    # progress
    "progress.submitting": "Submitting…",
    "progress.queued": "Queued: position {position}",
    "progress.starting": "Starting…",
    "progress.loading": "Loading model…",
    "progress.encoding": "Encoding prompt…",
    "progress.step": "Step {step}/{total}",
    "progress.decoding": "Decoding…",
    "progress.saving": "Saving…",
    "progress.done": "Done: {count} image(s) in {seconds} s",
    "progress.interrupted": "Interrupted at step {step}/{total}",
    "progress.failed": "Failed",
    # PNG Info
    "pnginfo.image": "Source image",
    "pnginfo.parameters": "Parameters",
    "pnginfo.fields": "Parsed fields",
    "pnginfo.field": "Field",
    "pnginfo.value": "Value",
    "pnginfo.prompt": "Prompt",
    "pnginfo.negative": "Negative prompt",
    "pnginfo.none": "This image has no generation parameters.",
    "pnginfo.send": "Send to txt2img",
    "pnginfo.sent": "Parameters sent to txt2img",
    "pnginfo.sampler_skipped": "Sampler {sampler} is not available for the current model; kept the current one",
    # Models
    "models.found": "Models found",
    "models.refresh": "Refresh",
    "models.col_name": "Name",
    "models.col_family": "Family",
    "models.col_format": "Format",
    "models.col_hash": "Hash",
    "models.col_status": "Status",
    "models.ok": "✅ supported",
    "models.unsupported": "⛔ {reason}",
    "models.unknown_family": "—",
    "models.suggested": "Suggested models",
    "models.col_repo": "Repository",
    "models.col_note": "Note",
    "models.repo_id": "Hugging Face repo id",
    "models.repo_placeholder": "org/name",
    "models.download": "Download",
    "models.download_progress": "{percent}% · {done} / {total} MB",
    "models.download_waiting": "Waiting to start…",
    "models.download_done": "Downloaded {repo} to {path}",
    "models.count": "{count} model(s), {supported} supported",
    # error titles and messages (keys error.<VisageError.code>)
    "info.title": "Info",
    "error.title": "Error",
    "error.warning_title": "Warning",
    "error.error": "{detail}",
    "error.unexpected": "Unexpected failure ({kind}): {detail}",
    "error.invalid_request": "{field}: {rule}",
    "error.model_not_found": "Model not found: {detail}",
    "error.unsupported_model": "Unsupported model: {detail}",
    "error.missing_component": "Missing component: {detail}",
    "error.model_load_error": "Could not load the model: {detail}",
    "error.not_ready": "No model is ready: {detail}",
    "error.interrupted": "Interrupted at step {step}/{total}",
    "error.queue_full": "The queue is full: {detail}",
    "error.download_error": "Download failed: {detail}",
    "error.unsafe_name": "Name refused: {detail}",
    "error.invalid_preset": "Invalid preset: {detail}",
    "error.lora_error": "LoRA problem: {detail}",
    # InvalidRequest field names
    "field.prompt": "Prompt",
    "field.negative_prompt": "Negative prompt",
    "field.steps": "Sampling steps",
    "field.cfg_scale": "CFG Scale",
    "field.width": "Width",
    "field.height": "Height",
    "field.seed": "Seed",
    "field.batch_size": "Batch size",
    "field.batch_count": "Batch count",
    "field.sampler": "Sampling method",
    "field.clip_skip": "Clip skip",
    "field.model": "Checkpoint",
    "field.image": "Image",
    "field.repo_id": "Repo id",
    # InvalidRequest rule shapes
    "rule.between": "must be between {low} and {high}",
    "rule.multiple": "must be a multiple of {n}",
    "rule.max_chars": "must be text of at most {n} characters",
    "rule.seed": "must be -1 (random) or between 0 and {high}",
    "rule.one_of": "must be one of {choices} for {family}",
    "rule.number": "must be a number",
    "rule.whole": "must be a whole number",
}

ZH: dict[str, str] = {
    "app.title": "Visage",
    "status.idle": "⚪ 未加载模型",
    "status.idle_message": "⚪ 未加载模型：{message}",
    "status.loading": "⏳ 正在加载 {model}…",
    "status.ready": "🟢 就绪 · {model} · {family} · {device} {dtype}",
    "status.queue": " · 队列中 {n} 个任务",
    "status.error": "🔴 错误：{message}",
    "status.unknown_model": "（无）",
    "model.label": "模型",
    "model.refresh": "🔄",
    "model.switched": "已切换到 {model}",
    "tab.txt2img": "文生图",
    "tab.pnginfo": "图片信息",
    "tab.models": "模型管理",
    "txt2img.prompt": "提示词",
    "txt2img.prompt_placeholder": "描述人像",
    "txt2img.negative": "反向提示词",
    "txt2img.negative_placeholder": "需要避免的内容",
    "txt2img.sampler": "采样方法",
    "txt2img.steps": "采样步数",
    "txt2img.cfg": "提示词引导系数 (CFG)",
    "txt2img.width": "宽度",
    "txt2img.height": "高度",
    "txt2img.seed": "随机种子",
    "txt2img.seed_info": "-1 表示随机",
    "txt2img.random_seed": "🎲",
    "txt2img.reuse_seed": "♻️",
    "txt2img.batch_size": "单批数量",
    "txt2img.batch_count": "总批次数",
    "txt2img.clip_skip": "CLIP 终止层数",
    "txt2img.generate": "生成",
    "txt2img.interrupt": "中止",
    "txt2img.gallery": "输出",
    "txt2img.infotext": "生成信息",
    "txt2img.interrupt_sent": "已请求中止",
    "txt2img.nothing_running": "当前没有正在运行的任务",
    "progress.submitting": "正在提交…",
    "progress.queued": "排队中：第 {position} 位",
    "progress.starting": "正在开始…",
    "progress.loading": "正在加载模型…",
    "progress.encoding": "正在编码提示词…",
    "progress.step": "第 {step}/{total} 步",
    "progress.decoding": "正在解码…",
    "progress.saving": "正在保存…",
    "progress.done": "完成：{count} 张图片，用时 {seconds} 秒",
    "progress.interrupted": "已在第 {step}/{total} 步中止",
    "progress.failed": "失败",
    "pnginfo.image": "来源图片",
    "pnginfo.parameters": "生成参数",
    "pnginfo.fields": "解析出的字段",
    "pnginfo.field": "字段",
    "pnginfo.value": "值",
    "pnginfo.prompt": "提示词",
    "pnginfo.negative": "反向提示词",
    "pnginfo.none": "这张图片没有生成参数。",
    "pnginfo.send": "发送到文生图",
    "pnginfo.sent": "参数已发送到文生图",
    "pnginfo.sampler_skipped": "当前模型不支持采样方法 {sampler}，保留当前设置",
    "models.found": "已找到的模型",
    "models.refresh": "刷新",
    "models.col_name": "名称",
    "models.col_family": "系列",
    "models.col_format": "格式",
    "models.col_hash": "哈希",
    "models.col_status": "状态",
    "models.ok": "✅ 支持",
    "models.unsupported": "⛔ {reason}",
    "models.unknown_family": "—",
    "models.suggested": "推荐模型",
    "models.col_repo": "仓库",
    "models.col_note": "说明",
    "models.repo_id": "Hugging Face 仓库 ID",
    "models.repo_placeholder": "组织/名称",
    "models.download": "下载",
    "models.download_progress": "{percent}% · {done} / {total} MB",
    "models.download_waiting": "等待开始…",
    "models.download_done": "已下载 {repo} 到 {path}",
    "models.count": "共 {count} 个模型，{supported} 个可用",
    "info.title": "提示",
    "error.title": "错误",
    "error.warning_title": "警告",
    "error.error": "{detail}",
    "error.unexpected": "意外失败（{kind}）：{detail}",
    "error.invalid_request": "参数“{field}”无效：{rule}",
    "error.model_not_found": "找不到模型：{detail}",
    "error.unsupported_model": "不支持的模型：{detail}",
    "error.missing_component": "缺少组件：{detail}",
    "error.model_load_error": "模型加载失败：{detail}",
    "error.not_ready": "没有可用的模型：{detail}",
    "error.interrupted": "已在第 {step}/{total} 步中止",
    "error.queue_full": "队列已满：{detail}",
    "error.download_error": "下载失败：{detail}",
    "error.unsafe_name": "名称被拒绝：{detail}",
    "error.invalid_preset": "预设无效：{detail}",
    "error.lora_error": "LoRA 出错：{detail}",
    "field.prompt": "提示词",
    "field.negative_prompt": "反向提示词",
    "field.steps": "采样步数",
    "field.cfg_scale": "提示词引导系数 (CFG)",
    "field.width": "宽度",
    "field.height": "高度",
    "field.seed": "随机种子",
    "field.batch_size": "单批数量",
    "field.batch_count": "总批次数",
    "field.sampler": "采样方法",
    "field.clip_skip": "CLIP 终止层数",
    "field.model": "模型",
    "field.image": "图片",
    "field.repo_id": "仓库 ID",
    "rule.between": "必须在 {low} 到 {high} 之间",
    "rule.multiple": "必须是 {n} 的倍数",
    "rule.max_chars": "最多 {n} 个字符",
    "rule.seed": "必须为 -1（随机）或 0 到 {high} 之间",
    "rule.one_of": "{family} 只能使用：{choices}",
    "rule.number": "必须是数字",
    "rule.whole": "必须是整数",
}

TABLES: dict[str, Mapping[str, str]] = {"en": EN, "zh": ZH}

#: shapes of InvalidRequest rules (modules.generation.params) -> (rule key, field names of the groups)
_RULES: tuple[tuple[re.Pattern, str, tuple[str, ...]], ...] = (
    (re.compile(r"^must be -1 \(random\) or between 0 and (\S+)$"), "rule.seed", ("high",)),
    (re.compile(r"^must be between (\S+) and (\S+)$"), "rule.between", ("low", "high")),
    (re.compile(r"^must be a multiple of (\d+)$"), "rule.multiple", ("n",)),
    (re.compile(r"^must be text of at most (\d+) characters$"), "rule.max_chars", ("n",)),
    (re.compile(r"^must be one of (.+) for (.+)$"), "rule.one_of", ("choices", "family")),
    (re.compile(r"^must be a number$"), "rule.number", ()),
    (re.compile(r"^must be a whole number$"), "rule.whole", ()),
)


def resolve_lang(lang: str | None) -> str:
    """``zh``/``en`` as given; ``auto`` (or None) follows the locale environment, English by default."""
    if lang in LANGUAGES:
        return lang
    if lang not in (None, "", "auto"):
        raise ValueError(f"unknown language {lang!r}; expected one of auto, {', '.join(LANGUAGES)}")
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


@dataclass
class Translator:
    """``t(key, **fields)``: the string for ``key`` in ``lang``, formatted with ``fields``.

    A missing key returns the key itself (so a page still renders) and is recorded in ``missing``;
    with ``strict=True`` it raises ``KeyError`` instead. ``used`` and ``produced`` record what the
    page asked for and what it got, so tests can prove no page string bypassed translation.
    """

    lang: str
    strict: bool = False
    used: set[str] = field(default_factory=set)
    produced: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.lang not in TABLES:
            raise ValueError(f"unknown language {self.lang!r}")

    @property
    def table(self) -> Mapping[str, str]:
        return TABLES[self.lang]

    def has(self, key: str) -> bool:
        return key in self.table

    def __call__(self, key: str, **fields) -> str:
        self.used.add(key)
        template = self.table.get(key)
        if template is None:
            if self.strict:
                raise KeyError(f"no {self.lang} string for {key!r}")
            self.missing.add(key)
            template = key
        text = template.format(**fields) if fields else template
        self.produced.add(text)
        return text


def translate_rule(t: Translator, rule: str) -> str:
    for pattern, key, names in _RULES:
        match = pattern.match(rule)
        if match:
            return t(key, **dict(zip(names, match.groups())))
    return rule


def error_text(t: Translator, exc: BaseException) -> str:
    """The user-facing message for ``exc`` in ``t``'s language (never a traceback)."""
    if isinstance(exc, InvalidRequest):
        name = t(f"field.{exc.field}") if t.has(f"field.{exc.field}") else exc.field
        return t("error.invalid_request", field=name, rule=translate_rule(t, exc.rule))
    if isinstance(exc, Interrupted):
        return t("error.interrupted", step=exc.step, total=exc.total)
    if isinstance(exc, VisageError):
        key = f"error.{exc.code}"
        return t(key if t.has(key) else "error.error", detail=str(exc))
    return t("error.unexpected", kind=type(exc).__name__, detail=str(exc))
