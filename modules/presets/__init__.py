"""Portrait presets: JSON files of prompt templates and per-family parameters. Torch-free."""
from modules.presets.schema import FamilyParams, LocalizedText, LoraRef, Preset, PresetError, parse_preset
from modules.presets.store import PresetStore, apply_preset, load_preset_file

__all__ = [
    "FamilyParams", "LocalizedText", "LoraRef", "Preset", "PresetError", "PresetStore",
    "apply_preset", "load_preset_file", "parse_preset",
]
