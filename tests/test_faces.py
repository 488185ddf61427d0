"""MTCNN (modules/faces): the real weights from the facenet-pytorch wheel load strictly into our nets, the
cascade finds the faces of the real photos with plausible landmarks, and a broken stage is caught (landmark
outputs read as (x, y) pairs, box calibration skipped); NMS by hand; ``fetch-face-detector`` offline and from a
wheel; GPEN's ``auto`` detector picks MTCNN when the weights are there."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from test_gpen_arch import gpen

from modules.errors import DownloadError, MissingComponent, ModelLoadError
from modules.faces import boxes as B
from modules.faces import detect as D
from modules.faces import weights as W
from modules.faces.mtcnn import ONet, PNet, RNet, load_net


# -- fixtures: the wheel once per session ----------------------------------------------------------------
@pytest.fixture(scope="session")
def mtcnn_wheel(tmp_path_factory):
    dest = tmp_path_factory.mktemp("facenet-wheel")
    try:
        return W.download_wheel(dest, dest / "unused")
    except DownloadError as exc:
        pytest.skip(f"the facenet-pytorch 2.6.0 wheel cannot be downloaded here (pip: {exc})")


@pytest.fixture(scope="session")
def mtcnn_models(mtcnn_wheel, tmp_path_factory):
    """A models/ folder with the real MTCNN weights in face-detection/mtcnn."""
    models = tmp_path_factory.mktemp("models")
    W.fetch_face_detector(models, mtcnn_wheel)
    return models


@pytest.fixture(scope="session")
def detector(mtcnn_models):
    return D.MtcnnDetector.from_folder(W.mtcnn_folder(mtcnn_models))


def _photo(shared_assets, name):
    return np.array(Image.open(shared_assets / "images" / name).convert("RGB"))


def face_problems(face) -> list[str]:
    """What is implausible about a detected face: landmarks outside the box, eyes not above the nose and the
    nose not above the mouth, left/right swapped."""
    x0, y0, x1, y1 = face.box
    (lex, ley), (rex, rey), (_, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    problems = []
    if not all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks):
        problems.append("landmark outside the box")
    if not max(ley, rey) < ny < min(lmy, rmy):
        problems.append("eyes / nose / mouth not top to bottom")
    if not (lex < rex and lmx < rmx):
        problems.append("left and right swapped")
    return problems


# -- nets and weights ------------------------------------------------------------------------------------
def test_wheel_weights_load_strictly_into_our_nets(mtcnn_wheel, tmp_path):
    files = W.read_wheel(mtcnn_wheel)
    assert set(files) == {"pnet.pt", "rnet.pt", "onet.pt"}
    W.install_weights(files, tmp_path)
    counts = {}
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = load_net(name, tmp_path / f"{name}.pt")
        assert isinstance(net, cls) and not net.training
        counts[name] = sum(p.numel() for p in net.parameters())
    assert counts == {"pnet": 6632, "rnet": 100178, "onet": 389040}
    with torch.inference_mode():
        prob, offsets = load_net("pnet", tmp_path / "pnet.pt")(torch.zeros(1, 3, 12, 12))
    assert prob.shape == (1, 1, 1) and offsets.shape == (1, 4, 1, 1)


def test_wrong_files_are_typed_errors(tmp_path):
    (tmp_path / "pnet.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError):
        load_net("pnet", tmp_path / "pnet.pt")
    torch.save(RNet().state_dict(), tmp_path / "rnet.pt")
    with pytest.raises(ModelLoadError):  # R-Net weights are not O-Net's
        load_net("onet", tmp_path / "rnet.pt")
    with pytest.raises(MissingComponent, match="fetch-face-detector"):
        D.MtcnnDetector.from_folder(tmp_path)
    (tmp_path / "x.whl").write_bytes(b"PK not really")
    with pytest.raises(ModelLoadError, match="not a wheel"):
        W.read_wheel(tmp_path / "x.whl")


# -- the cascade on real photos --------------------------------------------------------------------------
def test_one_face_with_landmarks_on_astronaut(detector, shared_assets):
    faces = detector.detect(_photo(shared_assets, "astronaut.png"))
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    assert face_problems(face) == []
    haar = gpen("detect").detect_faces(gpen("detect").HaarDetector(), _photo(shared_assets, "astronaut.png"),
                                       gpen("detect").DetectOptions())
    assert gpen("detect").box_iou(face.box, haar[0].box) > 0.5  # the same face as the other detector's


def test_solvay_faces_all_plausible(detector, shared_assets):
    faces = detector.detect(_photo(shared_assets, "Solvay_conference_1927.png"))
    assert 27 <= len(faces) <= 31  # ~29 people; measured 29 (docs/benchmarks.md)
    assert [f for f in faces if face_problems(f)] == []
    widths = [f.box[2] - f.box[0] for f in faces]
    assert 20 <= min(widths) and max(widths) < 60  # head-sized boxes, nothing huge


def test_landmarks_read_as_pairs_are_caught(detector, shared_assets, monkeypatch):
    """Broken path 1: O-Net's 10 landmark outputs are 5 x then 5 y; reading them as (x, y) pairs puts an eye
    below the mouth, which :func:`face_problems` (the check the tests above use) reports."""
    def as_pairs(boxes, points):
        wh = boxes[:, 2:] - boxes[:, :2]
        return boxes[:, None, :2] + points.view(-1, 5, 2) * wh[:, None, :]

    monkeypatch.setattr(D, "landmarks_from_offsets", as_pairs)
    faces = detector.detect(_photo(shared_assets, "astronaut.png"))
    assert faces and "eyes / nose / mouth not top to bottom" in face_problems(faces[0])


def test_skipped_box_calibration_is_caught(detector, shared_assets, monkeypatch):
    """Broken path 2: without box calibration the astronaut gives several boxes (a duplicate half a face
    off and a false face), so the one-face test fails."""
    monkeypatch.setattr(B, "calibrate", lambda boxes, offsets: boxes)
    assert len(detector.detect(_photo(shared_assets, "astronaut.png"))) != 1


def test_no_face_in_flat_image(detector):
    assert detector.detect(np.full((200, 300, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((10, 10), np.uint8)) == []  # smaller than the smallest face


# -- box arithmetic -----------------------------------------------------------------------------------------
def test_nms_keeps_best_of_each_group():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6], [0, 0, 10, 10.]])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8, 0.1])
    assert B.nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # 0 and 4 overlap 1; 3 is small inside (IoU 0.16)
    assert B.nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]  # "min": 3 lies inside 1
    assert B.nms(boxes, scores, 1.0).tolist() == [1, 0, 3, 2, 4]  # nothing suppressed
    assert B.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_calibrate_square_and_pyramid():
    box = torch.tensor([[10., 20., 30., 60.]])
    assert B.calibrate(box, torch.tensor([[0.1, -0.25, 0.0, 0.5]])).tolist() == [[12., 10., 30., 80.]]
    assert B.square(box).tolist() == [[0., 20., 40., 60.]]
    scales = D.pyramid_scales(100, 200, min_face=20, factor=0.5)
    assert scales == [0.6, 0.3, 0.15]  # 60, 30, 15 px >= 12; 7.5 px is below P-Net's window


def test_crop_pads_outside_with_black():
    image = torch.full((3, 10, 10), 255.0)
    crop = D.crop_boxes(image, torch.tensor([[-10., 0., 10., 10.]]), 4)  # left half outside the image
    assert torch.allclose(crop[0, :, :, 0], torch.tensor(-127.5 / 128))  # (the resampling blurs the seam)
    assert torch.allclose(crop[0, :, :, 3], torch.tensor(127.5 / 128))


# -- fetch-face-detector ------------------------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "modules.cli", "fetch-face-detector", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=False, timeout=300, env={**os.environ, **(env or {})})


def test_fetch_offline_says_what_to_do(tmp_path):
    result = _cli("--models-dir", str(tmp_path),
                  env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
                       "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull})
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "could not download the facenet-pytorch==2.6.0 wheel" in err
    assert "pip download --no-deps facenet-pytorch==2.6.0" in err and "--from" in err
    assert str(tmp_path / "face-detection" / "mtcnn") in err
    assert "Traceback" not in err and not (tmp_path / "face-detection").exists()


def test_fetch_from_wheel_and_bad_wheel(mtcnn_wheel, tmp_path):
    result = _cli("--models-dir", str(tmp_path), "--from", str(mtcnn_wheel))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "face-detection" / "mtcnn"
    assert result.stdout.strip() == str(folder) and W.have_weights(folder)
    (tmp_path / "bad.whl").write_bytes(b"nope")
    bad = _cli("--models-dir", str(tmp_path / "other"), "--from", str(tmp_path / "bad.whl"))
    assert bad.returncode == 2 and "not a wheel" in bad.stderr


# -- GPEN's detector choice ------------------------------------------------------------------------------------
def test_gpen_auto_uses_mtcnn_when_present(mtcnn_models, tmp_path, shared_assets):
    detect, align = gpen("detect"), gpen("align")
    assert detect.resolve_detector("auto", tmp_path) == "haar"
    assert isinstance(detect.make_detector("auto", models_dir=tmp_path), detect.HaarDetector)
    det = detect.make_detector("auto", models_dir=mtcnn_models)
    assert det.name == "mtcnn"
    rgb = _photo(shared_assets, "Solvay_conference_1927.png")
    faces = detect.detect_faces(det, rgb, detect.DetectOptions(max_side=1024))
    assert 27 <= len(faces) <= 31 and all(f.landmarks.shape == (5, 2) for f in faces)
    # least-squares alignment puts the 5 points near the FFHQ template (residual a few px at 512)
    face = max(faces, key=lambda f: f.width)
    m = align.face_transform(face, 512)
    mapped = face.landmarks @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - align.FFHQ_512).max() < 40
