"""Output files: A1111 infotext and PNG saving/reading. Torch-free."""
from modules.outputs.infotext import build_infotext, parse_infotext, request_from_infotext
from modules.outputs.saving import read_png_parameters, save_png

__all__ = ["build_infotext", "parse_infotext", "request_from_infotext", "read_png_parameters", "save_png"]
