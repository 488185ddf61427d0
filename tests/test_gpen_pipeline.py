"""GPEN face pipeline: detection on real photos, alignment, paste-back, big images with bounded memory,
and the whole restore on the 256 model with random weights in the released layout."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from test_gpen_arch import gpen, random_models_folder


@pytest.fixture(scope="module")
def models_256(tmp_path_factory):
    """A models folder holding GPEN-BFR-256.pth with random weights (the real layout, see test_gpen_arch)."""
    return random_models_folder(tmp_path_factory.mktemp("gpen-models"), seed=3)


def _photo(shared_assets, name):
    return np.array(Image.open(shared_assets / "images" / name).convert("RGB"))


# -- detection on real photos --------------------------------------------------------------------------
def test_one_face_on_astronaut(shared_assets):
    detect = gpen("detect")
    rgb = _photo(shared_assets, "astronaut.png")
    faces = detect.detect_faces(detect.HaarDetector(), rgb, detect.DetectOptions())
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    # Eileen Collins' face: upper middle of the 512x512 portrait
    assert 150 < x0 < 200 and 50 < y0 < 100 and 60 < x1 - x0 < 130
    (lx, ly), (rx, ry) = faces[0].eyes
    assert x0 < lx < (x0 + x1) / 2 < rx < x1 and y0 < ly < (y0 + y1) / 2 and abs(ly - ry) < 10


def test_most_faces_on_solvay_and_nothing_else(shared_assets):
    """~29 people; the default threshold (min_neighbors 5, docs/gpen.md) finds them all with the default
    auto-resize (max_side 1024), and every box is a head: in the band of faces, head-sized, not overlapping."""
    detect = gpen("detect")
    rgb = _photo(shared_assets, "Solvay_conference_1927.png")
    faces = detect.detect_faces(detect.HaarDetector(), rgb, detect.DetectOptions(max_side=1024))
    assert 25 <= len(faces) <= 30
    for f in faces:
        assert f.box[3] < 300, f"a 'face' below the rows of heads: {f.box}"
        assert 30 < f.width < 75, f"not head-sized: {f.box}"
    for i, a in enumerate(faces):
        for b in faces[i + 1:]:
            assert detect.box_iou(a.box, b.box) < 0.2


def test_threshold_trades_false_faces_for_missed_ones(shared_assets):
    """Lower thresholds add boxes that are not faces; the chosen one is inside the stable range."""
    detect = gpen("detect")
    rgb = _photo(shared_assets, "Solvay_conference_1927.png")
    counts = {k: len(detect.detect_faces(detect.HaarDetector(min_neighbors=k), rgb, detect.DetectOptions()))
              for k in (1, detect.DEFAULT_MIN_NEIGHBORS)}
    assert counts[1] > counts[detect.DEFAULT_MIN_NEIGHBORS]


# -- alignment and paste-back --------------------------------------------------------------------------
def _texture(h, w, seed=0):
    import cv2
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth: interpolation error stays small


def test_alignment_round_trip_restores_the_face_region():
    import cv2
    align, detect = gpen("align"), gpen("detect")
    img = _texture(400, 500)
    face = detect.Face((180, 120, 300, 240), 9.0, eyes=np.array([[215.0, 170.0], [262.0, 176.0]]))
    m = align.face_transform(face, 512)
    # the eyes land on the FFHQ template's eyes
    eyes = np.c_[face.eyes, np.ones(2)] @ m.T
    assert np.allclose(eyes, align.template(512)[:2], atol=1e-6)
    crop = align.warp_face(img, m, 512)
    back = cv2.warpAffine(crop, align.invert(m), (500, 400), flags=cv2.INTER_LINEAR)
    region = (slice(150, 215), slice(200, 280))  # inside the face box, well inside the crop
    diff = np.abs(back[region].astype(int) - img[region].astype(int))
    assert diff.mean() < 4 and diff.max() < 40


def test_five_point_alignment_is_least_squares_onto_the_template():
    align = gpen("align")
    t = align.template(256)
    angle, scale, shift = 0.3, 0.4, np.array([40.0, 70.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (t - t.mean(0)) @ rot.T * scale + t.mean(0) * scale + shift  # the template, moved
    m = align.similarity_from_landmarks(points, 256)
    assert np.allclose(np.c_[points, np.ones(5)] @ m.T, t, atol=1e-6)


def test_paste_back_leaves_pixels_far_from_the_face_unchanged():
    align, detect = gpen("align"), gpen("detect")
    img = _texture(600, 800, seed=1)
    before = img.copy()
    face = detect.Face((300, 200, 400, 300), 9.0, eyes=np.array([[330.0, 240.0], [370.0, 240.0]]))
    m = align.face_transform(face, 256)
    restored = np.full((256, 256, 3), 200, np.uint8)
    region = align.paste_back(img, restored, m, color_match=False)
    x0, y0, x1, y1 = region
    assert x0 <= 300 and x1 >= 400 and y0 <= 200 and y1 >= 300
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(img[outside], before[outside])
    # inside: the face centre took the restored pixels, the region's corners (mask 0) kept the old ones
    assert np.abs(img[250, 350].astype(int) - 200).max() <= 1
    assert np.array_equal(img[y0, x0], before[y0, x0]) and np.array_equal(img[y1 - 1, x1 - 1], before[y1 - 1, x1 - 1])


def test_colour_match_moves_the_restored_face_to_the_original_colours():
    align = gpen("align")
    original = np.zeros((64, 64, 3), np.uint8)
    original[...] = (150, 110, 90)
    original[::2] += 10
    restored = np.zeros_like(original)
    restored[...] = (60, 160, 60)
    restored[::2] += 20
    out = align.match_colors(restored, original, np.ones((64, 64), np.float32))
    assert np.abs(out.reshape(-1, 3).mean(0) - original.reshape(-1, 3).mean(0)).max() < 6


# -- the whole restore ---------------------------------------------------------------------------------
def test_restore_astronaut_with_256_model(models_256, shared_assets):
    restore = gpen("restore")
    image = Image.open(shared_assets / "images" / "astronaut.png")
    phases = []
    r = restore.FaceRestorer(models_256)
    result = r.restore(image, restore.RestoreOptions(model="GPEN-BFR-256"),
                       report=lambda phase, step, total: phases.append((phase, step, total)))
    assert result.image.size == image.size and len(result.faces) == 1
    assert result.infotext == {"Face restoration": "GPEN-BFR-256", "Faces restored": "1"}
    assert result.device == "cpu" and result.dtype == "fp32"
    assert ("restoring", 1, 1) in phases
    before, after = np.array(image.convert("RGB")), np.array(result.image)
    assert np.array_equal(before[400:], after[400:])  # the lower part of the photo is untouched
    assert np.abs(before[90:140, 190:260].astype(int) - after[90:140, 190:260]).mean() > 3  # the face changed


def test_fp16_on_cpu_runs_fp32_and_says_so(models_256):
    restore = gpen("restore")
    image = Image.fromarray(_texture(128, 128))
    result = restore.FaceRestorer(models_256).restore(image, restore.RestoreOptions(model="GPEN-BFR-256", fp16=True,
                                                                                    device="cpu"))
    assert result.dtype == "fp32" and any("fp16" in n for n in result.notes)
    assert result.faces == [] and np.array_equal(np.array(result.image), np.array(image))


def test_bad_options_are_typed_errors(models_256):
    from modules.errors import InvalidRequest
    restore = gpen("restore")
    for bad in ({"model": "GPEN-BFR-9"}, {"tile": 10}, {"max_side": 5}, {"upscale": 9}, {"strength": 2.0}):
        with pytest.raises(InvalidRequest):
            restore.FaceRestorer(models_256).check_ready(restore.RestoreOptions.from_mapping(bad))


BIG_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from PIL import Image
    from modules.extensions import load_extensions
    from pathlib import Path
    load_extensions(Path(sys.argv[1]), models_dir=Path(sys.argv[2]), outputs_dir=Path(sys.argv[2]))
    from visage_ext_gpen.restore import FaceRestorer, RestoreOptions
    h, w = 3000, 4000
    rng = np.random.default_rng(0)
    canvas = np.repeat(np.repeat(rng.integers(60, 200, (h // 50, w // 50, 3), dtype=np.uint8), 50, 0), 50, 1)
    face = Path(sys.argv[3])
    if face.is_file():  # three real faces pasted in at 2x (the astronaut photo), when the assets are here
        a = Image.open(face).convert("RGB").resize((1024, 1024))
        for x, y in ((200, 300), (1800, 1500), (2900, 200)):
            canvas[y:y + 1024, x:x + 1024] = np.array(a)
    image = Image.fromarray(canvas)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = FaceRestorer(Path(sys.argv[2]))
    out = {}
    modes = {"max_side": dict(max_side=1024), "tile": dict(tile=1024)}
    for mode in sys.argv[4].split(","):
        opts = modes[mode]
        res = r.restore(image, RestoreOptions(model="GPEN-BFR-256", **opts))
        after = np.array(res.image)
        changed = np.argwhere((after != canvas).any(-1))
        out[mode] = {"faces": len(res.faces), "size": list(res.image.size),
                     "changed_box": changed.min(0).tolist() + changed.max(0).tolist() if len(changed) else None}
    out["base_rss_mb"] = base / 1024
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")


def _big_photo(models_256, tmp_path, modes):
    """A 4000x3000 photo: same size out, faces found where they were pasted, and the process's peak RSS
    stays under 2 GB (model, photo and a few copies; never a float copy of it)."""
    script = tmp_path / "big.py"
    script.write_text(BIG_SCRIPT)
    face = REPO_ROOT.parent / "shared" / "assets" / "images" / "astronaut.png"
    proc = subprocess.run([sys.executable, str(script), str(REPO_ROOT / "extensions"), str(models_256), str(face),
                           ",".join(modes)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for mode in modes:
        assert out[mode]["size"] == [4000, 3000]
        if face.is_file():
            assert out[mode]["faces"] == 3, out
            y0, x0, y1, x1 = out[mode]["changed_box"]
            assert y0 >= 200 and x0 >= 200 and y1 < 2524 and x1 < 3924  # only around the pasted faces
    assert out["peak_rss_mb"] < 2048, out
    assert out["peak_rss_mb"] - out["base_rss_mb"] < 1200, out


def test_big_photo_auto_resize_bounded_memory(models_256, tmp_path):
    _big_photo(models_256, tmp_path, ["max_side"])


@pytest.mark.slow
def test_big_photo_tiles_bounded_memory(models_256, tmp_path):
    """20 full-resolution 1024 px tiles (about a minute on 2 busy cores)."""
    _big_photo(models_256, tmp_path, ["max_side", "tile"])


def test_tiles_find_the_same_faces_on_solvay(shared_assets):
    detect = gpen("detect")
    rgb = _photo(shared_assets, "Solvay_conference_1927.png")
    whole = detect.detect_faces(detect.HaarDetector(), rgb, detect.DetectOptions(max_side=0))
    tiled = detect.detect_faces(detect.HaarDetector(), rgb, detect.DetectOptions(tile=400))
    matched = sum(1 for f in tiled if max(detect.box_iou(f.box, g.box) for g in whole) > 0.5)
    assert len(whole) >= 25 and matched >= len(whole) - 1 and len(tiled) <= len(whole) + 1


def test_tile_origins_cover_with_overlap():
    detect = gpen("detect")
    starts = detect.tile_origins(4000, 1024, 256)
    assert starts[0] == 0 and starts[-1] == 4000 - 1024
    assert all(b - a <= 1024 - 256 for a, b in zip(starts, starts[1:]))
    assert detect.tile_origins(500, 1024, 256) == [0]


# -- RetinaFace (user-supplied weights) ----------------------------------------------------------------
def test_retinaface_layout_counts_and_decoding(tmp_path):
    import torch
    retina = gpen("retinaface")
    model = retina.RetinaFaceR50()
    sd = model.state_dict()
    # torchvision ResNet-50 up to layer4: 53 convs + 53 BNs (5 tensors each) = 318 tensors
    assert sum(1 for k in sd if k.startswith("body.")) == 53 + 53 * 5
    assert sd["fpn.output3.0.weight"].shape == (256, 2048, 1, 1)
    assert sd["ssh1.conv7x7_3.0.weight"].shape == (64, 64, 3, 3)
    assert sd["ClassHead.0.conv1x1.weight"].shape == (4, 256, 1, 1)
    assert sd["LandmarkHead.2.conv1x1.weight"].shape == (20, 256, 1, 1)
    anchors = retina.priors(64, 96)
    assert len(anchors) == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    assert np.allclose(anchors[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64]) and np.allclose(anchors[1, 2], 32 / 96)
    boxes, pts = retina.decode(np.zeros((len(anchors), 4), np.float32), np.zeros((len(anchors), 10), np.float32),
                               anchors)
    assert np.allclose(boxes[0], [(4 - 8) / 96, (4 - 8) / 64, (4 + 8) / 96, (4 + 8) / 64])
    assert np.allclose(pts[5], np.repeat(anchors[5:6, :2], 5, 0))


def test_retinaface_detector_with_supplied_weights(tmp_path):
    import torch
    from modules.errors import MissingComponent
    retina, detect = gpen("retinaface"), gpen("detect")
    with pytest.raises(MissingComponent, match="models/GPEN/RetinaFace-R50.pth"):
        detect.make_detector("retinaface", models_dir=tmp_path)
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in retina.RetinaFaceR50().state_dict().items()}  # DataParallel-style names
    (tmp_path / "GPEN").mkdir()
    torch.save(state, tmp_path / "GPEN" / "RetinaFace-R50.pth")
    det = detect.make_detector("retinaface", models_dir=tmp_path)
    det.threshold = 0.0  # random weights: keep everything, to exercise decoding and NMS
    faces = det.detect(_texture(96, 128))
    assert faces and all(f.landmarks.shape == (5, 2) for f in faces)
    for a, b in zip(faces, faces[1:]):
        assert a.score >= b.score
    for i, a in enumerate(faces):
        assert all(detect.box_iou(a.box, b.box) <= 0.4 + 1e-6 for b in faces[i + 1:])
