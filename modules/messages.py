"""Messages by key: the English templates of every keyed message Visage says, and :class:`Message`. Torch-free.

A typed error or a job note carries a *key* and *params* (``Message("rule.between", low=1, high=150)``);
its English text (``str()``, what logs, the CLI and the API's ``detail`` show) is rendered from :data:`EN`.
The page translates the same key with the same params from its own table (``modules/ui/i18n.py``), so
rewording an English template never drops its translation: nothing is matched by text.

Extensions bring their own keys (``<extension>.…``) in every language with :func:`add_catalog`
(GPEN: ``extensions/gpen/strings.py``). A key missing from a language falls back to English.
"""
from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from string import Formatter
from typing import Any

#: English templates. The wording is part of the API (``detail``, ``rule``) and of the CLI's output.
EN: dict[str, str] = {
    # InvalidRequest rules (the field is said separately: "steps: must be between 1 and 150")
    "rule.between": "must be between {low} and {high}",
    "rule.multiple": "must be a multiple of {n}",
    "rule.max_chars": "must be text of at most {n} characters",
    "rule.seed": "must be -1 (random) or between 0 and {high}",
    "rule.one_of": "must be one of {choices} for {family}",
    "rule.one_of_not": "must be one of {choices}, not {value!r}",
    "rule.choice": "must be one of {choices}",
    "rule.between_off": "must be between 0 (off) and {high}",
    "rule.postprocess_ids": "must be a list of post-processor ids",
    "rule.adetailer_args": "must be ADetailer's args: [enabled, skip img2img, then one object per unit (ad_model, ad_prompt, ...)]",
    "rule.detailer_settings": "must be the face detailer's settings",
    "rule.detailer_denoise": "the face detailer needs a denoising strength above 0 and at most 1",
    "rule.between_model": "must be between {low} and {high} for this model",
    "rule.edge_exists": "edge package {name!r} already exists (choose another name or overwrite)",
    "rule.server_between": "must be between {low} and {high} on this server ({value} from the preset or model defaults)",
    "rule.server_at_most": "must be at most {high} on this server ({value} from the preset or model defaults)",
    "rule.number": "must be a number",
    "rule.whole": "must be a whole number",
    "rule.required": "is required",
    "rule.no_preset": "no preset named {name!r}",
    "rule.unknown_styles": "unknown style(s): {names}",
    "rule.lora_pairs": "must be a list of [name, weight] pairs",
    "rule.lora_rows": "must be a list of [name, U-Net weight, text-encoder weight] rows",
    "rule.weights_between": "weights must be between {low} and {high}",
    "rule.lora_nonzero": "give at least one LoRA with a non-zero weight",
    "rule.exists": "{name} already exists (choose another name)",
    "rule.exists_in": "{name} already exists in {folder} (choose another name)",
    "rule.model_exists": "a model named {name!r} already exists ({file})",
    "rule.bad_name": "{name!r} is not a usable model name",
    "rule.diffusers_folder": "a diffusers model is a folder: give a name without .safetensors",
    "rule.inside_base": "the merged model cannot replace or live inside its base model",
    # keyed by the rules converted from free text (generation, LoRA, engine, names, edge, styles, presets, sdapi)
    "rule.unknown_sampler": "unknown sampler {name!r}",
    "rule.clip_skip_layers": "must be at most {layers} for this model (its text encoder has {layers} layers)",
    "rule.unknown_postprocessor": "unknown post-processor {id!r} (available: {known})",
    "rule.none_installed": "none installed",
    "rule.lora_weight_nan": "{tag}: weight {text!r} is not a number",
    "rule.lora_weight_range": "{tag}: weight {text!r} is out of range",
    "rule.lora_option": "{tag}: unknown option {key!r} (use te=, unet=)",
    "rule.lora_values": "{tag}: too many values (at most text-encoder:unet:dyn)",
    "rule.lora_dyn": "{tag}: dyn {dyn!r} is not a whole number",
    "rule.text": "must be text",
    "rule.base_family": "{name} is {family}, not {wanted}",
    "rule.single_file_suffix": "a single-file model must end with {suffix}",
    "rule.hidden_name": "hidden names are not allowed",
    "rule.exists_not_model": "{name} exists and is not a {fmt} model",
    "rule.field": "{field}: {rule}",
    "rule.name_empty": "must be a non-empty name",
    "rule.at_most_chars": "must be at most {n} characters",
    "rule.name_control": "must not contain NUL or other control characters",
    "rule.name_absolute": "must be a name, not an absolute path",
    "rule.name_dotdot": "must not contain '..'",
    "rule.model_outside": "{name!r} leads outside the model folders",
    "rule.lora_outside": "LoRA {name!r} leads outside the LoRA folders",
    "rule.served_suffixes": "only {suffixes} files are served",
    "rule.is_edge": "{name} is an edge package: it runs on the onnx backend",
    "rule.not_edge": "{name} is not an edge package; build one with "
                     "`python -m modules.cli build-edge --model {name}` or use backend auto",
    "rule.edge_loras": "LoRAs are merged into edge packages when they are built (this one has: {merged})",
    "rule.none": "none",
    "rule.edge_no_taesd": "{name} has no TAESD decoder; rebuild it with TAESD",
    "rule.taesd_needed": "'taesd' needs TAESD weights, which this server lacks; use 'vae' ({missing})",
    "rule.distill_prune": "distillation recovers a pruned U-Net: give --prune too",
    "rule.decoder_needed": "a package needs a decoder: TAESD, the full VAE, or both",
    "rule.image": "must be an image",
    "rule.megapixels": "{size} is over {n} megapixels",
    "rule.mask_needs_image": "a mask needs an init image (inpainting repaints part of an image)",
    "rule.mask_size": "must be the size of the init image ({size}), not {got}",
    "rule.hires_denoise": "hires fix needs a denoising strength above 0 and at most 1 (0 would only enlarge the "
                          "first pass's image: use an upscaler instead)",
    "rule.hires_size": "the hires fix size {size} is out of range: each side must be between {low} and {high}",
    "rule.hires_txt2img": "hires fix is for txt2img: an init image is img2img already (set its size instead)",
    "rule.calibration": "needs at least one prompt and one step",
    "rule.package_name": "{name!r} is not a usable package name (one plain folder name)",
    "rule.edge_taesd": "TAESD weights are needed (or build with the full VAE decoder only)",
    "rule.csv_line": "line {line}: {problem}",
    "rule.model_name": "must be a model name",
    "rule.whole_from": "must be a whole number from {low} to {high}",
    "rule.got": "{rule}, got {value}",
    "rule.not_empty": "must not be empty",
    "rule.no_nul": "must not contain NUL characters",
    "rule.object": "must be an object",
    "rule.json_object": "must be a JSON object",
    "rule.object_shaped": "must be an object {shape}",
    "rule.unknown_language": 'unknown language (use "zh" and "en")',
    "rule.unknown_family": "unknown family {value!r} (known: {known})",
    "rule.unknown_field": "unknown field",
    "rule.unknown_field_known": "unknown field (known: {known})",
    "rule.not_sampler": "{sampler!r} is not a {family} sampler (use one of: {choices})",
    "rule.no_clip_skip": "{family} has no CLIP skip; remove this field",
    "rule.preset_id": "{id!r} must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
    "rule.id_mismatch": "{id!r} does not match the file name {file!r}",
    "rule.thumbnail": "must be a plain file name (.png, .jpg, .jpeg or .webp) in the preset folder",
    "rule.tags": "must be a list of at most {n} words",
    "rule.families_list": 'must be a non-empty list such as ["sdxl", "sd15"]',
    "rule.listed_twice": "{value!r} is listed twice",
    "rule.object_by_family": "must be an object keyed by family",
    "rule.required_per_family": "is required for every family in 'families'",
    "rule.seed_value": 'must be "random" or a whole number',
    "rule.preset_loras": 'must be a list of at most {n} {{"name", "weight"}} objects',
    "rule.lora_name_chars": "must not contain '<', '>' or ':'",
    "kind.null": "null",
    "kind.bool": "true/false",
    "kind.text": "text {text!r}",
    "kind.number": "the number {value}",
    "kind.list": "a list",
    "kind.object": "an object",
    # other errors
    "progress.fetching": "fetching {what} ({repo}) {done}/{total} MB",
    "interrupted.at_step": "interrupted at step {step}/{total}",
    "capability.unsupported": "{model} runs on the {backend} backend, which cannot do {capability}",
    # pieces fetched on demand (modules/loader/on_demand.py): what is missing, where it goes, which command
    "missing.clip_tokenizer": "CLIP tokenizer not found: single-file SD1.5/SDXL models need vocab.json and "
                              "merges.txt in {folder}; run `{command}` (it fetches them from {repo}) or copy "
                              "that tokenizer folder there",
    "missing.taesd": "TAESD weights for {family} not found: put the diffusers-format {repo} (config.json + "
                     "diffusion_pytorch_model.safetensors) in {folder}, or run `{command}`",
    "missing.not_fetched": "{missing} (not fetched automatically: {reason})",
    "missing.offline": "offline, HF_HUB_OFFLINE is set",
    # MTCNN face detector (modules/faces/weights.py)
    "faces.mtcnn_missing": "MTCNN face-detector weights not found in {folder} (missing {files}); run `{command}` "
                           "(it takes them from the facenet-pytorch wheel on PyPI, MIT licence)",
    "faces.mtcnn_bad_wheel": "{path} cannot give MTCNN's weights: {reason}",
    "faces.mtcnn_offline": "could not download the {package} wheel with pip ({reason}). Offline: on a machine "
                           "with internet run `pip download --no-deps {package} -d DIR`, copy DIR/{wheel} here "
                           "and run `{command} --from {wheel}`, or copy pnet.pt, rnet.pt and onet.pt into {folder}",
    # downloads (modules/downloads/)
    "download.offline": "cannot download {what}: offline (HF_HUB_OFFLINE is set); it would go to {where}. "
                        "Unset HF_HUB_OFFLINE and run `{command}`",
    "download.unreachable": "cannot download {what} from {endpoint} ({reason}); it would go to {where}. "
                            "Check the network (or HF_ENDPOINT) and run `{command}`",
    "download.not_found": "{what} was not found on {endpoint} (check the repo id, file name and revision)",
    "download.gated": "{what} needs a Hugging Face login and accepted terms: run `hf auth login`, accept them on "
                      "the model's page, then download again",
    "download.bad_repo": "{repo_id!r} is not a Hugging Face repo id (expected 'org/name')",
    "download.bad_url": "{url!r} is not a Hub file URL (expected https://huggingface.co/ORG/REPO/blob/REV/FILE)",
    "download.no_space": "not enough disk space in {folder}: the download needs {need}, {free} is free",
    "download.connection_lost": "the connection was lost while downloading {name} ({done} of {total}: {reason}); "
                                "run `{command}` again to resume",
    "download.write_failed": "could not write {name}: {reason}",
    "download.size": "{name}: got {got} bytes, the Hub says {want}; the partial file was removed, download it again",
    "download.checksum": "{name} does not match the Hub's sha256 ({got}, expected {want}); the partial file "
                         "was removed, download it again",
    "download.unknown_pack": "no starter pack named {name!r} (packs: {choices})",
    "download.what": "say what to download: a pack, a repo id (and a file), or a Hub file URL",
    # notes of a finished job (GenerationResult.notes)
    "note.lora_unmatched": "{count} LoRA layer(s) matched no module, e.g. {examples}",
    "note.lora": "{lora}: {note}",
    "note.postprocess_failed": "post-processor {id} failed: {kind}: {detail}; the images were kept without it",
    "note.detailer_no_face": "face detailer: no face scoring at least {confidence} in image {index}; it was kept as it was",
    # notes about a LoRA file (LoraInfo.notes; in a job's notes as "note.lora")
    "note.lora_no_alpha": "no alpha stored: assuming alpha = rank (scale 1), as diffusers does",
    "note.lora_dora": "DoRA (PEFT magnitude vectors)",
    "note.lora_locon": "LoCon: includes convolution layers",
    "note.lora_zimage_te": "text-encoder weights are ignored (diffusers loads Z-Image LoRAs into the DiT only)",
    "note.lora_cloneofsimo": "cloneofsimo lora_diffusion (2022) format: converted by Visage (scale 1, no alpha)",
    "note.lora_embedded_tokens": "embedded textual-inversion tokens {tokens} are not loaded",
}

#: language -> key -> template that extensions added with :func:`add_catalog` (Visage's English is
#: :data:`EN`; the page's other languages are in ``modules/ui/strings/``).
_CATALOGS: dict[str, dict[str, str]] = {}


def add_catalog(tables: Mapping[str, Mapping[str, str]]) -> None:
    """Add keyed templates per language (``{"en": {...}, "zh": {...}}``); an extension's keys start with
    its name and a dot. English is required for every key (``str()`` renders it), and a translation must
    use the same placeholders as its English template."""
    en = {**EN, **_CATALOGS.get("en", {}), **tables.get("en", {})}
    for lang, table in tables.items():
        missing = set(table) - set(en)
        if missing:
            raise ValueError(f"no English template for {', '.join(sorted(missing))}")
        odd = sorted(k for k, v in table.items() if placeholders(v) != placeholders(en[k]))
        if odd:
            raise ValueError(f"{lang} templates with other placeholders than English: {', '.join(odd)}")
    for lang, table in tables.items():
        _CATALOGS.setdefault(lang, {}).update(table)


def catalog(lang: str) -> Mapping[str, str]:
    """The templates for ``lang`` outside the page's tables: English is Visage's :data:`EN` and the
    extensions' English; another language has the extensions' templates only."""
    extra = _CATALOGS.get(lang, {})
    return ChainMap(extra, EN) if lang == "en" else extra


def placeholders(template: str) -> frozenset[str]:
    """The parameter names a template uses: ``"{n} of {total:.1f}"`` -> {"n", "total"}."""
    names = set()
    for _text, name, _spec, _conv in Formatter().parse(template):
        if name is not None:
            names.add(name.split(".")[0].split("[")[0])
    return frozenset(names)


def format_template(template: str, params: Mapping[str, Any], lang: str = "en",
                    translate: Callable[[Message], str] | None = None) -> str:
    """``template`` filled with ``params``; a :class:`Message` param is itself rendered in ``lang``
    (with ``translate(message)`` when given)."""
    values = {k: ((translate(v) if translate else v.render(lang)) if isinstance(v, Message) else v)
              for k, v in params.items()}
    return template.format(**values) if values else template


def render(key: str, params: Mapping[str, Any] | None = None, lang: str = "en") -> str:
    """The text of message ``key`` in ``lang`` (English when that language lacks it). An unknown key (a bug:
    tests check every key has a template) renders as the key and its params, never raises."""
    params = dict(params or {})
    for table in (catalog(lang), catalog("en")):
        template = table.get(key)
        if template is not None:
            try:
                return format_template(template, params, lang)
            except (KeyError, IndexError, ValueError):
                continue
    return key + (" " + ", ".join(f"{k}={v}" for k, v in params.items()) if params else "")


class Message(str):
    """A keyed message: ``Message("rule.between", low=1, high=150)``.

    It *is* its English text (a ``str``: it joins, compares, serializes and logs as today's f-strings did),
    and keeps ``key`` and ``params`` so the page can say it in another language.
    """

    key: str
    params: dict[str, Any]

    def __new__(cls, key: str, /, **params: Any) -> "Message":
        self = super().__new__(cls, render(key, params))
        self.key = key
        self.params = params
        return self

    def render(self, lang: str = "en") -> str:
        return render(self.key, self.params, lang)

    def __getnewargs_ex__(self):  # pickle/copy rebuild from the key, not from the English text
        return (self.key,), dict(self.params)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Message({self.key!r}{args})"


def as_message(text: str | Message) -> Message | None:
    """``text`` when it is keyed, else None (free-form text, shown as it is in every language)."""
    return text if isinstance(text, Message) else None


def json_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as JSON values (the API's error ``params``): numbers, text, booleans and None as they are,
    lists and mappings element by element, anything else (a path, a keyed message) as its English text."""
    return {str(k): _json_value(v) for k, v in params.items()}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return json_params(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    return str(value)
