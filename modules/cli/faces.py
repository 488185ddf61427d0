"""``fetch-face-detector``: MTCNN's weights out of the facenet-pytorch wheel into models/face-detection/mtcnn."""
from __future__ import annotations

from pathlib import Path

from modules.cli.base import Command
from modules.cli.settings import add_folder_flags, settings_from_args


def configure_fetch_face_detector(p) -> None:
    add_folder_flags(p)
    p.add_argument("--from", dest="source", type=Path,
                   help="a facenet_pytorch-2.6.0-py3-none-any.whl already on disk (offline machines)")


def run_fetch_face_detector(args) -> int:
    from modules.faces.weights import fetch_face_detector

    folder = fetch_face_detector(settings_from_args(args).folders.models, args.source)
    print(folder)
    return 0


COMMANDS = (
    Command("fetch-face-detector", "put MTCNN's face-detector weights (from the facenet-pytorch wheel, MIT) into "
                                   "models/face-detection/mtcnn", run_fetch_face_detector,
            configure_fetch_face_detector),
)
