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
    "tab.system": "System",
    "tab.merge": "Merge",
    "tab.edge": "Build edge",
    "edge.intro": "Turn an SD1.5 model into an **edge package** for CPUs and small devices: LoRAs merged in, U-Net optionally pruned, everything exported to ONNX, INT8-quantized and decoded by TAESD. The package appears in the checkpoint list as `edge/NAME`. A full-size build takes several minutes on a CPU (see docs/edge.md).",
    "edge.model": "Source model (SD1.5)",
    "edge.prune": "Prune ratio",
    "edge.prune_info": "Share of inner U-Net channels removed (0 = none). Without distillation, pruning degrades real models.",
    "edge.distill": "Distillation steps",
    "edge.distill_info": "Data-free recovery after pruning (0 = none); each step costs seconds on a CPU",
    "edge.quantize": "Quantization",
    "edge.quantize_none": "None (fp32)",
    "edge.method": "U-Net INT8 method",
    "edge.method_auto": "Auto (static)",
    "edge.attention": "U-Net attention",
    "edge.attention_fused": "Fused (ONNX Runtime, fastest)",
    "edge.attention_standard": "Standard ONNX (OpenVINO)",
    "edge.full_vae": "Also export the full VAE decoder",
    "edge.out_name": "Package name",
    "edge.out_placeholder": "empty: from the model and options",
    "edge.run": "Build edge package",
    "edge.result": "Package",
    "edge.progress": "{stage} ({step}/{total})",
    "edge.stage_starting": "Starting",
    "edge.stage_merge": "Merging LoRAs",
    "edge.stage_prune": "Pruning the U-Net",
    "edge.stage_distill": "Distilling",
    "edge.stage_calibrate": "Recording calibration inputs",
    "edge.stage_export_te": "Exporting the text encoder",
    "edge.stage_export_unet": "Exporting the U-Net",
    "edge.stage_export_decoders": "Exporting the decoders",
    "edge.stage_quantize": "Quantizing",
    "edge.stage_write": "Writing the package",
    "edge.stage_done": "Done",
    "edge.built": "Built {name}",
    "edge.done": "✅ Built **{name}** in `{path}`. Pick it in the checkpoint list.",
    "edge.interrupted": "Build interrupted; nothing was written.",
    # txt2img
    "txt2img.prompt": "Prompt",
    "txt2img.prompt_placeholder": "Describe the portrait (Ctrl+Enter generates)",
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
    "txt2img.run_options": "Backend, decoder and live preview",
    "txt2img.backend": "Backend",
    "txt2img.backend_info": "Auto: edge packages run in ONNX Runtime, other models in diffusers",
    "txt2img.backend_auto": "Auto",
    "txt2img.decoder": "Final decode",
    "txt2img.decoder_vae": "Full VAE (best)",
    "txt2img.decoder_taesd": "TAESD (fast)",
    "txt2img.preview_every": "Live preview every N steps",
    "txt2img.preview_every_info": "0 = off. Previews are decoded with TAESD (models/VAE-approx)",
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
    "progress.note": "⚠️ {note}",
    "progress.notes_title": "Note",
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
    # presets
    "presets.title": "Presets",
    "presets.gallery": "Click a preset: it fills the settings and generates with your prompt",
    "presets.apply_only": "Apply only (fill the settings, don't generate)",
    "presets.only_family": "Only presets made for the current model",
    "presets.other_family": "made for {families}",
    "presets.active": "**Preset:** {name}",
    "presets.clear": "✕ Clear preset",
    "presets.cleared": "Preset cleared: prompts are used as typed",
    "presets.applied": "Preset {name} applied",
    "presets.api_id": "Preset id",
    "presets.manage": "Manage presets",
    "presets.pick": "Preset (🔒 = built in)",
    "presets.load": "Load",
    "presets.delete": "Delete",
    "presets.id": "Id (file name)",
    "presets.id_info": "a-z, 0-9, _ and -; saving with an existing id replaces that preset",
    "presets.name_zh": "Chinese name",
    "presets.name_en": "English name",
    "presets.description_zh": "Chinese description (optional)",
    "presets.description_en": "English description (optional)",
    "presets.prompt": "Prompt template",
    "presets.prompt_info": "{prompt} is replaced by what you type in the prompt box",
    "presets.negative": "Negative prompt",
    "presets.save": "💾 Save current settings as preset",
    "presets.save_note": "Saves the sampler, steps, CFG, size, seed and clip skip shown above for the current model family, with the templates above.",
    "presets.saved": "Saved preset {id}",
    "presets.deleted": "Deleted preset {id}",
    "presets.builtin_refused": "{name} is a built-in preset and cannot be deleted; save it under a new id to make your own version",
    "presets.pick_first": "Choose a preset first",
    "presets.id_required": "Enter an id for the preset",
    "presets.bad_id": "The id {id} is not allowed: use 1-64 characters of a-z, 0-9, _ or -, starting with a letter or digit",
    "presets.name_required": "Enter a name (Chinese or English)",
    "presets.reload": "🔄 Reload presets",
    "presets.reloaded": "{count} preset(s) loaded",
    "presets.errors": "⚠️ {count} preset file(s) could not be loaded:",
    "presets.col_file": "File",
    "presets.col_field": "Field",
    "presets.col_problem": "Problem",
    # styles
    "styles.label": "Styles",
    "styles.refresh": "🔄",
    # System tab
    # LoRA picker
    "lora.title": "LoRA",
    "lora.search": "Search LoRAs",
    "lora.search_placeholder": "name…",
    "lora.refresh": "🔄",
    "lora.cards": "Click a LoRA to add it (greyed out: not usable with the current model)",
    "lora.count": "{count} LoRA(s), {usable} usable with the current model",
    "lora.no_match": "none matches “{query}”",
    "lora.none_found": "No LoRA files found: put .safetensors LoRAs into models/Lora (or a --lora-dir folder) and press 🔄",
    "lora.made_for": "made for {family}",
    "lora.unsupported": "not supported",
    "lora.unknown_family": "family unknown",
    "lora.rank": "rank {rank}",
    "lora.text_encoder": "+ text encoder",
    "lora.weight": "Weight",
    "lora.remove": "✕",
    "lora.insert_tags": "Insert as <lora:name:w> tags into the prompt",
    "lora.inserted": "{count} LoRA tag(s) inserted into the prompt",
    "lora.nothing_picked": "Click a LoRA first",
    "lora.already": "{name} is already added",
    "lora.full": "At most {n} LoRAs at a time",
    "lora.gone": "{name} is no longer in the LoRA folders; press 🔄",
    "lora.not_usable": "{name} cannot be used with the current model: {reason}",
    "lora.api_loras": "LoRAs ([name, weight] pairs)",
    # Merge tab
    "merge.intro": "Fuse LoRAs into a base model and save the result as a new model in models/Stable-diffusion.",
    "merge.base": "Base model",
    "merge.lora": "LoRA {n}",
    "merge.unet_weight": "U-Net / DiT weight",
    "merge.te_weight": "Text-encoder weight",
    "merge.refresh_loras": "🔄 Rescan LoRAs",
    "merge.out_name": "Output name",
    "merge.out_placeholder": "my-merged-model",
    "merge.out_info": "Saved in models/Stable-diffusion (.safetensors is added for a single file)",
    "merge.format": "Format",
    "merge.format_single": "Single file (.safetensors)",
    "merge.format_diffusers": "Diffusers folder",
    "merge.dtype": "Precision",
    "merge.run": "Merge",
    "merge.result": "Merged model",
    "merge.api_loras": "LoRAs ([name, U-Net weight, text-encoder weight] rows)",
    "merge.progress": "{phase} {step}/{total} …",
    "merge.phase_starting": "Starting",
    "merge.phase_loading_model": "Loading the base model",
    "merge.phase_hashing": "Hashing",
    "merge.phase_loading_lora": "Loading LoRA {name}",
    "merge.phase_fusing": "Fusing",
    "merge.phase_converting": "Converting to {dtype}",
    "merge.phase_writing": "Writing {name}",
    "merge.phase_done": "Finishing",
    "merge.done": "✅ Saved **{name}** ({path}). It is in the checkpoint list now.",
    "merge.saved": "Saved {name}",
    "merge.interrupted": "Merge stopped at stage {step}/{total}; nothing was written",
    "merge.no_loras": "No usable LoRA files found: put .safetensors LoRAs into models/Lora and press 🔄",
    # System tab
    "system.refresh": "🔄 Refresh",
    "system.none": "none",
    "system.data": "System facts (JSON)",
    "system.engine": "### Engine\n- **Status:** {status}\n- **Device:** {device} · {dtype}\n- **Other models parked in RAM (instant switch):** {in_ram}\n- **Jobs in queue:** {queue}",
    "system.memory": "### Memory\n- **RAM (this process):** {rss} GiB\n- **RAM (machine):** {used} / {total} GiB{vram}",
    "system.vram_none": "\n- **VRAM:** — (running on the CPU)",
    "system.vram": "\n- **VRAM ({name}):** {allocated} GiB allocated · {reserved} GiB reserved · peak {peak} GiB\n- **GPU memory (all processes):** {used} / {total} GiB",
    "system.versions": "### Versions\n{lines}",
    "system.not_installed": "not installed",
    # History tab
    "tab.history": "History",
    "history.date": "Date",
    "history.refresh": "🔄 Refresh",
    "history.gallery": "Saved images",
    "history.infotext": "Generation info",
    "history.send": "Send to txt2img",
    "history.trash": "🗑️ Move to trash",
    "history.empty": "No saved images yet.",
    "history.count": "{count} image(s) on {date} — click one to see its settings",
    "history.no_infotext": "(this image has no generation info)",
    "history.pick_first": "Click an image first",
    "history.trashed": "Moved {name} to {folder}",
    "field.date": "Date",
    # language switch
    "lang.label": "Language / 语言",
    "lang.en": "English",
    "lang.zh": "中文",
    "system.cache": "### Prompt-embedding cache\n- **Hits / misses:** {hits} / {misses} (hit rate {rate})\n- **Entries in RAM:** {entries} · {mib} / {max_mib} MiB\n- **Time saved:** {saved} s\n- **On disk:** {disk_entries} entries · {disk_mib} MiB · {disk_hits} hits from disk",
    # error titles and messages (keys error.<VisageError.code>)
    "info.title": "Info",
    "error.title": "Error",
    "error.warning_title": "Warning",
    "error.error": "{detail}",
    "error.unexpected": "Unexpected failure ({kind}): {detail}",
    "error.extension_error": "Extension: {detail}",
    # extensions (System tab accordion, txt2img post-processors, extension tabs)
    "ext.title": "Extensions ({count})",
    "ext.intro": "From `{folder}`. Enabling or disabling one applies after a restart of Visage.",
    "ext.none": "No extensions in `{folder}` (see extensions/README.md to write one).",
    "ext.config_error": "⚠️ Extensions settings file: {error}",
    "ext.row": "**{name}** {version} · {provides} · {state}",
    "ext.state_loaded": "✅ loaded",
    "ext.state_failed": "❌ failed: {error}",
    "ext.state_disabled": "⏸ disabled ({by})",
    "ext.by_settings": "in settings",
    "ext.by_flag": "--disable-extension",
    "ext.by_all": "--disable-all-extensions",
    "ext.provides_postprocessor": "post-processor",
    "ext.provides_tab": "tab",
    "ext.provides_api": "API routes",
    "ext.provides_cli": "CLI command",
    "ext.provides_settings": "settings",
    "ext.provides_nothing": "nothing",
    "ext.warning": "⚠️ {warning}",
    "ext.enabled": "Enabled",
    "ext.saved_on": "{name} will be enabled after a restart",
    "ext.saved_off": "{name} will be disabled after a restart",
    "ext.postprocess": "Post-processing",
    "ext.tab_failed": "❌ The tab of extension {name} failed to build: {error}",
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
    "error.out_of_memory": "Out of memory: {detail}",
    "error.merge_error": "Merge failed: {detail}",
    "error.edge_build_error": "Edge build failed: {detail}",
    "error.unsupported_capability": "Not possible with this model: {detail}",
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
    "field.preset": "Preset",
    "field.styles": "Styles",
    "field.loras": "LoRAs",
    "field.base": "Base model",
    "field.out": "Output name",
    "field.format": "Format",
    "field.dtype": "Precision",
    # InvalidRequest rule shapes
    "rule.between": "must be between {low} and {high}",
    "rule.multiple": "must be a multiple of {n}",
    "rule.max_chars": "must be text of at most {n} characters",
    "rule.seed": "must be -1 (random) or between 0 and {high}",
    "rule.one_of": "must be one of {choices} for {family}",
    "rule.number": "must be a number",
    "rule.whole": "must be a whole number",
    "rule.no_preset": "there is no preset {name}",
    "rule.unknown_styles": "unknown style(s): {names}",
    "rule.required": "is required",
    "rule.lora_pairs": "must be a list of [name, weight] pairs",
    "rule.lora_rows": "must be a list of [name, U-Net weight, text-encoder weight] rows",
    "rule.weights_between": "weights must be between {low} and {high}",
    "rule.one_of_not": "must be one of {choices}, not {value}",
    "rule.lora_nonzero": "give at least one LoRA with a non-zero weight",
    "rule.exists": "{name} already exists (choose another name)",
    "rule.model_exists": "a model named {name} already exists ({file})",
    "rule.bad_name": "{name} is not a usable model name",
    "rule.diffusers_folder": "a diffusers model is a folder: give a name without .safetensors",
    "rule.inside_base": "the merged model cannot replace or live inside its base model",
    # notes from a finished generation
    "note.lora_unmatched": "{count} LoRA layer(s) matched no module, e.g. {examples}",
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
    "tab.system": "系统",
    "tab.merge": "合并",
    "tab.edge": "边缘包",
    "edge.intro": "把 SD1.5 模型做成面向 CPU 和小型设备的**边缘包**：合并 LoRA，可选剪枝 U-Net，全部导出为 ONNX，INT8 量化，用 TAESD 解码。生成的包以 `edge/名称` 出现在模型列表中。在 CPU 上构建完整尺寸模型需要几分钟（见 docs/edge.md）。",
    "edge.model": "源模型（SD1.5）",
    "edge.prune": "剪枝比例",
    "edge.prune_info": "去掉的 U-Net 内部通道比例（0 = 不剪枝）。不做蒸馏时，剪枝会损害真实模型的效果。",
    "edge.distill": "蒸馏步数",
    "edge.distill_info": "剪枝后无需数据的恢复训练（0 = 不做）；在 CPU 上每步需数秒",
    "edge.quantize": "量化",
    "edge.quantize_none": "不量化（fp32）",
    "edge.method": "U-Net INT8 方法",
    "edge.method_auto": "自动（静态）",
    "edge.attention": "U-Net 注意力",
    "edge.attention_fused": "融合（ONNX Runtime，最快）",
    "edge.attention_standard": "标准 ONNX（OpenVINO）",
    "edge.full_vae": "同时导出完整 VAE 解码器",
    "edge.out_name": "包名称",
    "edge.out_placeholder": "留空：按模型和选项命名",
    "edge.run": "构建边缘包",
    "edge.result": "边缘包",
    "edge.progress": "{stage}（{step}/{total}）",
    "edge.stage_starting": "正在开始",
    "edge.stage_merge": "合并 LoRA",
    "edge.stage_prune": "剪枝 U-Net",
    "edge.stage_distill": "蒸馏",
    "edge.stage_calibrate": "记录校准输入",
    "edge.stage_export_te": "导出文本编码器",
    "edge.stage_export_unet": "导出 U-Net",
    "edge.stage_export_decoders": "导出解码器",
    "edge.stage_quantize": "量化",
    "edge.stage_write": "写入边缘包",
    "edge.stage_done": "完成",
    "edge.built": "已构建 {name}",
    "edge.done": "✅ 已构建 **{name}**，位于 `{path}`。可在模型列表中选择它。",
    "edge.interrupted": "构建已中断，未写入任何文件。",
    "txt2img.prompt": "提示词",
    "txt2img.prompt_placeholder": "描述人像（Ctrl+Enter 生成）",
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
    "txt2img.run_options": "后端、解码与实时预览",
    "txt2img.backend": "推理后端",
    "txt2img.backend_info": "自动：边缘包用 ONNX Runtime，其他模型用 diffusers",
    "txt2img.backend_auto": "自动",
    "txt2img.decoder": "最终解码",
    "txt2img.decoder_vae": "完整 VAE（质量最好）",
    "txt2img.decoder_taesd": "TAESD（快速）",
    "txt2img.preview_every": "每 N 步实时预览",
    "txt2img.preview_every_info": "0 = 关闭。预览由 TAESD 解码（models/VAE-approx）",
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
    "progress.note": "⚠️ {note}",
    "progress.notes_title": "注意",
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
    "presets.title": "预设",
    "presets.gallery": "点击预设：填入参数，并用你的提示词立即生成",
    "presets.apply_only": "仅应用（只填入参数，不生成）",
    "presets.only_family": "只显示适合当前模型的预设",
    "presets.other_family": "适用于 {families}",
    "presets.active": "**预设：** {name}",
    "presets.clear": "✕ 取消预设",
    "presets.cleared": "已取消预设：提示词按原样使用",
    "presets.applied": "已应用预设 {name}",
    "presets.api_id": "预设 ID",
    "presets.manage": "管理预设",
    "presets.pick": "预设（🔒 = 内置）",
    "presets.load": "载入",
    "presets.delete": "删除",
    "presets.id": "ID（文件名）",
    "presets.id_info": "可用 a-z、0-9、_ 和 -；用已有的 ID 保存会替换该预设",
    "presets.name_zh": "中文名称",
    "presets.name_en": "英文名称",
    "presets.description_zh": "中文说明（可选）",
    "presets.description_en": "英文说明（可选）",
    "presets.prompt": "提示词模板",
    "presets.prompt_info": "{prompt} 会被替换为你在提示词框中输入的内容",
    "presets.negative": "反向提示词",
    "presets.save": "💾 将当前设置保存为预设",
    "presets.save_note": "保存上方显示的采样方法、步数、CFG、尺寸、种子和 CLIP 终止层数（针对当前模型系列），以及上面的模板。",
    "presets.saved": "已保存预设 {id}",
    "presets.deleted": "已删除预设 {id}",
    "presets.builtin_refused": "“{name}”是内置预设，不能删除；可以用新的 ID 另存为自己的版本",
    "presets.pick_first": "请先选择一个预设",
    "presets.id_required": "请填写预设 ID",
    "presets.bad_id": "ID {id} 不可用：只能用 1-64 个 a-z、0-9、_ 或 - 字符，并以字母或数字开头",
    "presets.name_required": "请填写名称（中文或英文）",
    "presets.reload": "🔄 重新读取预设",
    "presets.reloaded": "已读取 {count} 个预设",
    "presets.errors": "⚠️ 有 {count} 个预设文件无法读取：",
    "presets.col_file": "文件",
    "presets.col_field": "字段",
    "presets.col_problem": "问题",
    "styles.label": "风格",
    "styles.refresh": "🔄",
    "system.refresh": "🔄 刷新",
    "lora.title": "LoRA",
    "lora.search": "搜索 LoRA",
    "lora.search_placeholder": "名称…",
    "lora.refresh": "🔄",
    "lora.cards": "点击 LoRA 添加（灰色：不适用于当前模型）",
    "lora.count": "共 {count} 个 LoRA，{usable} 个适用于当前模型",
    "lora.no_match": "没有与“{query}”匹配的",
    "lora.none_found": "没有找到 LoRA 文件：把 .safetensors 格式的 LoRA 放进 models/Lora（或 --lora-dir 指定的文件夹），再点 🔄",
    "lora.made_for": "适用于 {family}",
    "lora.unsupported": "不支持",
    "lora.unknown_family": "系列未知",
    "lora.rank": "秩 {rank}",
    "lora.text_encoder": "含文本编码器",
    "lora.weight": "权重",
    "lora.remove": "✕",
    "lora.insert_tags": "以 <lora:名称:权重> 标签插入提示词",
    "lora.inserted": "已将 {count} 个 LoRA 标签插入提示词",
    "lora.nothing_picked": "请先点击一个 LoRA",
    "lora.already": "{name} 已经添加",
    "lora.full": "最多同时使用 {n} 个 LoRA",
    "lora.gone": "LoRA 文件夹中已没有 {name}；请点 🔄",
    "lora.not_usable": "{name} 不能用于当前模型：{reason}",
    "lora.api_loras": "LoRA（[名称, 权重] 列表）",
    "merge.intro": "把 LoRA 融合进基础模型，另存为 models/Stable-diffusion 中的新模型。",
    "merge.base": "基础模型",
    "merge.lora": "LoRA {n}",
    "merge.unet_weight": "U-Net / DiT 权重",
    "merge.te_weight": "文本编码器权重",
    "merge.refresh_loras": "🔄 重新扫描 LoRA",
    "merge.out_name": "输出名称",
    "merge.out_placeholder": "我的合并模型",
    "merge.out_info": "保存在 models/Stable-diffusion 中（单文件会自动加上 .safetensors）",
    "merge.format": "格式",
    "merge.format_single": "单文件（.safetensors）",
    "merge.format_diffusers": "Diffusers 文件夹",
    "merge.dtype": "精度",
    "merge.run": "合并",
    "merge.result": "合并后的模型",
    "merge.api_loras": "LoRA（[名称, U-Net 权重, 文本编码器权重] 列表）",
    "merge.progress": "{phase} {step}/{total} …",
    "merge.phase_starting": "正在开始",
    "merge.phase_loading_model": "正在加载基础模型",
    "merge.phase_hashing": "正在计算哈希",
    "merge.phase_loading_lora": "正在加载 LoRA {name}",
    "merge.phase_fusing": "正在融合",
    "merge.phase_converting": "正在转换为 {dtype}",
    "merge.phase_writing": "正在写入 {name}",
    "merge.phase_done": "正在收尾",
    "merge.done": "✅ 已保存 **{name}**（{path}），现在可以在模型列表中选择。",
    "merge.saved": "已保存 {name}",
    "merge.interrupted": "合并已在第 {step}/{total} 阶段停止，没有写入任何文件",
    "merge.no_loras": "没有找到可用的 LoRA 文件：把 .safetensors 格式的 LoRA 放进 models/Lora，再点 🔄",
    "system.none": "无",
    "system.data": "系统信息（JSON）",
    "system.engine": "### 引擎\n- **状态：** {status}\n- **设备：** {device} · {dtype}\n- **内存中待命的其他模型（可立即切换）：** {in_ram}\n- **队列中的任务：** {queue}",
    "system.memory": "### 内存\n- **内存（本进程）：** {rss} GiB\n- **内存（整机）：** {used} / {total} GiB{vram}",
    "system.vram_none": "\n- **显存：** —（在 CPU 上运行）",
    "system.vram": "\n- **显存（{name}）：** 已分配 {allocated} GiB · 已保留 {reserved} GiB · 峰值 {peak} GiB\n- **显卡内存（所有进程）：** {used} / {total} GiB",
    "system.versions": "### 版本\n{lines}",
    "system.not_installed": "未安装",
    # 历史记录
    "tab.history": "历史记录",
    "history.date": "日期",
    "history.refresh": "🔄 刷新",
    "history.gallery": "已保存的图片",
    "history.infotext": "生成信息",
    "history.send": "发送到文生图",
    "history.trash": "🗑️ 移到回收站",
    "history.empty": "还没有保存的图片。",
    "history.count": "{date} 共 {count} 张图片 — 点击一张查看生成参数",
    "history.no_infotext": "（这张图片没有生成信息）",
    "history.pick_first": "请先点击一张图片",
    "history.trashed": "已将 {name} 移到 {folder}",
    "field.date": "日期",
    # 语言切换
    "lang.label": "语言 / Language",
    "lang.en": "English",
    "lang.zh": "中文",
    "system.cache": "### 提示词嵌入缓存\n- **命中 / 未命中：** {hits} / {misses}（命中率 {rate}）\n- **内存中的条目：** {entries} · {mib} / {max_mib} MiB\n- **节省时间：** {saved} 秒\n- **磁盘：** {disk_entries} 个条目 · {disk_mib} MiB · 从磁盘命中 {disk_hits} 次",
    "info.title": "提示",
    "error.title": "错误",
    "error.warning_title": "警告",
    "error.error": "{detail}",
    "error.unexpected": "意外失败（{kind}）：{detail}",
    "error.extension_error": "扩展：{detail}",
    "ext.title": "扩展（{count}）",
    "ext.intro": "来自 `{folder}`。启用或停用扩展需重启 Visage 后生效。",
    "ext.none": "`{folder}` 中没有扩展（编写方法见 extensions/README.md）。",
    "ext.config_error": "⚠️ 扩展设置文件：{error}",
    "ext.row": "**{name}** {version} · {provides} · {state}",
    "ext.state_loaded": "✅ 已加载",
    "ext.state_failed": "❌ 加载失败：{error}",
    "ext.state_disabled": "⏸ 已停用（{by}）",
    "ext.by_settings": "设置中",
    "ext.by_flag": "--disable-extension",
    "ext.by_all": "--disable-all-extensions",
    "ext.provides_postprocessor": "后处理",
    "ext.provides_tab": "标签页",
    "ext.provides_api": "API 接口",
    "ext.provides_cli": "命令行命令",
    "ext.provides_settings": "设置",
    "ext.provides_nothing": "无",
    "ext.warning": "⚠️ {warning}",
    "ext.enabled": "启用",
    "ext.saved_on": "{name} 将在重启后启用",
    "ext.saved_off": "{name} 将在重启后停用",
    "ext.postprocess": "后处理",
    "ext.tab_failed": "❌ 扩展 {name} 的标签页构建失败：{error}",
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
    "error.out_of_memory": "内存不足：{detail}",
    "error.merge_error": "合并失败：{detail}",
    "error.edge_build_error": "边缘包构建失败：{detail}",
    "error.unsupported_capability": "此模型无法完成该操作：{detail}",
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
    "field.preset": "预设",
    "field.styles": "风格",
    "field.loras": "LoRA",
    "field.base": "基础模型",
    "field.out": "输出名称",
    "field.format": "格式",
    "field.dtype": "精度",
    "rule.between": "必须在 {low} 到 {high} 之间",
    "rule.multiple": "必须是 {n} 的倍数",
    "rule.max_chars": "最多 {n} 个字符",
    "rule.seed": "必须为 -1（随机）或 0 到 {high} 之间",
    "rule.one_of": "{family} 只能使用：{choices}",
    "rule.number": "必须是数字",
    "rule.whole": "必须是整数",
    "rule.no_preset": "没有名为 {name} 的预设",
    "rule.unknown_styles": "未知的风格：{names}",
    "rule.required": "不能为空",
    "rule.lora_pairs": "必须是 [名称, 权重] 的列表",
    "rule.lora_rows": "必须是 [名称, U-Net 权重, 文本编码器权重] 的列表",
    "rule.weights_between": "权重必须在 {low} 到 {high} 之间",
    "rule.one_of_not": "只能是 {choices}，不能是 {value}",
    "rule.lora_nonzero": "至少需要一个权重不为 0 的 LoRA",
    "rule.exists": "{name} 已存在（请换一个名称）",
    "rule.model_exists": "已有名为 {name} 的模型（{file}）",
    "rule.bad_name": "{name} 不能用作模型名称",
    "rule.diffusers_folder": "Diffusers 模型是一个文件夹：名称不要带 .safetensors",
    "rule.inside_base": "合并后的模型不能替换基础模型，也不能放在基础模型里面",
    "note.lora_unmatched": "{count} 个 LoRA 层没有匹配到任何模块，例如 {examples}",
}

TABLES: dict[str, Mapping[str, str]] = {"en": EN, "zh": ZH}

#: shapes of InvalidRequest rules (modules.generation.params) -> (rule key, field names of the groups)
_RULES: tuple[tuple[re.Pattern, str, tuple[str, ...]], ...] = (
    (re.compile(r"^must be -1 \(random\) or between 0 and (\S+)$"), "rule.seed", ("high",)),
    (re.compile(r"^must be between (\S+) and (\S+)$"), "rule.between", ("low", "high")),
    (re.compile(r"^must be a multiple of (\d+)$"), "rule.multiple", ("n",)),
    (re.compile(r"^must be text of at most (\d+) characters$"), "rule.max_chars", ("n",)),
    (re.compile(r"^must be one of (.+), not (.+)$"), "rule.one_of_not", ("choices", "value")),
    (re.compile(r"^must be one of (.+) for (.+)$"), "rule.one_of", ("choices", "family")),
    (re.compile(r"^must be a number$"), "rule.number", ()),
    (re.compile(r"^must be a whole number$"), "rule.whole", ()),
    (re.compile(r"^no preset named (.+)$"), "rule.no_preset", ("name",)),
    (re.compile(r"^unknown style\(s\): (.+)$"), "rule.unknown_styles", ("names",)),
    (re.compile(r"^is required$"), "rule.required", ()),
    (re.compile(r"^must be a list of \[name, weight\] pairs$"), "rule.lora_pairs", ()),
    (re.compile(r"^must be a list of \[name, U-Net weight, text-encoder weight\] rows$"), "rule.lora_rows", ()),
    (re.compile(r"^weights must be between (\S+) and (\S+)$"), "rule.weights_between", ("low", "high")),
    (re.compile(r"^give at least one LoRA with a non-zero weight$"), "rule.lora_nonzero", ()),
    (re.compile(r"^a model named (.+) already exists \((.+)\)$"), "rule.model_exists", ("name", "file")),
    (re.compile(r"^(.+?) already exists(?: in .+)? \(choose another name\)$"), "rule.exists", ("name",)),
    (re.compile(r"^(.+) is not a usable model name$"), "rule.bad_name", ("name",)),
    (re.compile(r"^a diffusers model is a folder: give a name without \.safetensors$"), "rule.diffusers_folder", ()),
    (re.compile(r"^the merged model cannot replace or live inside its base model$"), "rule.inside_base", ()),
)

#: shapes of GenerationResult.notes (modules.engine) -> (note key, field names of the groups)
_NOTES: tuple[tuple[re.Pattern, str, tuple[str, ...]], ...] = (
    (re.compile(r"^(\d+) LoRA layer\(s\) matched no module, e\.g\. (.+)$", re.DOTALL), "note.lora_unmatched",
     ("count", "examples")),
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


def lang_from_accept_language(header: str | None) -> str | None:
    """The page language a browser's ``Accept-Language`` asks for: the supported language with the highest
    weight (``zh-CN,zh;q=0.9,en;q=0.8`` -> zh; ``en-US,en;q=0.9,zh;q=0.5`` -> en); None when it names neither."""
    best: tuple[float, int, str] | None = None
    for order, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight <= 0:
            continue
        if best is None or (weight, -order) > (best[0], -best[1]):
            best = (weight, order, primary)
    return best[2] if best else None


def preferred_lang(*, query: str | None, cookie: str | None, accept_language: str | None, default: str,
                   follow_browser: bool) -> str:
    """The language to serve at the page's root.

    An explicit choice wins (``?lang=`` then the ``visage_lang`` cookie the in-page switch leaves); then, with
    ``--lang auto`` (``follow_browser``), Chinese when the browser asks for it; otherwise ``default`` (the
    ``--lang`` flag, or with ``auto`` the system locale's language). So under ``auto``: zh when the browser
    or the system asks for it, else en.
    """
    for explicit in (query, cookie):
        if explicit in LANGUAGES:
            return explicit
    if follow_browser and lang_from_accept_language(accept_language) == "zh":
        return "zh"
    return default


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


def translate_note(t: Translator, note: str) -> str:
    """A note of a finished job (``GenerationResult.notes``) in ``t``'s language when its shape is known."""
    for pattern, key, names in _NOTES:
        match = pattern.match(note)
        if match:
            return t(key, **dict(zip(names, match.groups())))
    return note


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
