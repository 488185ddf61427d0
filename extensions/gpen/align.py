"""Face alignment and paste-back. Torch-free (numpy + OpenCV).

A face is mapped to the FFHQ layout GPEN was trained on by a similarity transform (rotation, uniform
scale, shift): least squares onto the 5-point FFHQ template when the detector gives landmarks, or the
exact transform that puts the two eye centres on the template's eyes when it gives only eyes.

Paste-back works on the face's own bounding region of the full image only (a 4000x3000 photo is never
copied as floats): the restored crop and a feathered mask are warped back with the inverse transform,
the restored colours are matched to the original face (mean/std per channel in Lab, inside the mask),
and the two are blended. Pixels where the mask is zero are left exactly as they were.
"""
from __future__ import annotations

import numpy as np

#: FFHQ 5-point template for a 512x512 crop (left eye, right eye, nose tip, left and right mouth
#: corner; "left" = image left), the layout the released GPEN models were trained on
FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)


def _cv2():
    import cv2
    return cv2


def template(size: int) -> np.ndarray:
    return FFHQ_512 * (size / 512.0)


def similarity_from_eyes(eyes: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix mapping image points to the crop, eyes landing exactly on the template's eyes."""
    src = np.asarray(eyes, dtype=np.float64)
    dst = template(size)[:2]
    sv, dv = src[1] - src[0], dst[1] - dst[0]
    # complex-number form of a similarity: z -> a*z + b
    zs, zd = complex(*sv), complex(*dv)
    if abs(zs) < 1e-6:
        raise ValueError("eye centres coincide")
    a = zd / zs
    b = complex(*dst[0]) - a * complex(*src[0])
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def similarity_from_landmarks(points: np.ndarray, size: int) -> np.ndarray:
    """Least-squares similarity mapping the 5 landmarks onto the FFHQ template (Umeyama, no reflection)."""
    src = np.asarray(points, dtype=np.float64)
    dst = template(size)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / ((s0 ** 2).sum() / len(src))
    t = md - scale * rot @ ms
    return np.hstack([scale * rot, t[:, None]])


def face_transform(face, size: int) -> np.ndarray:
    if face.landmarks is not None:
        return similarity_from_landmarks(face.landmarks, size)
    return similarity_from_eyes(face.eyes, size)


def invert(m: np.ndarray) -> np.ndarray:
    return _cv2().invertAffineTransform(m)


def warp_face(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The aligned size x size crop (edges replicated where the crop leaves the image)."""
    cv2 = _cv2()
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def feather_mask(size: int, margin: float = 0.06, blur: float = 0.04) -> np.ndarray:
    """A float mask in crop space: 1 inside, falling smoothly to exactly 0 at the crop's border."""
    cv2 = _cv2()
    mask = np.zeros((size, size), np.float32)
    m = int(round(size * margin))
    mask[m:size - m, m:size - m] = 1.0
    sigma = max(1.0, size * blur)
    k = max(3, min(int(6 * sigma) | 1, 2 * m - 1))  # odd, and the blur never reaches the crop's border
    mask = cv2.GaussianBlur(mask, (k, k), sigma)
    mask[:1, :] = mask[-1:, :] = 0.0
    mask[:, :1] = mask[:, -1:] = 0.0
    return mask


def paste_region(inv: np.ndarray, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) in the image of the crop mapped back by ``inv``; None if outside."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    pts = corners @ inv.T
    h, w = shape
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def match_colors(restored: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift the restored face's Lab mean/std to the original's, measured where ``mask`` > 0.5."""
    cv2 = _cv2()
    sel = mask > 0.5
    if sel.sum() < 16:
        return restored
    r = cv2.cvtColor(restored, cv2.COLOR_RGB2LAB).astype(np.float32)
    o = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)
    for c in range(3):
        rm, rs = r[..., c][sel].mean(), r[..., c][sel].std()
        om, os_ = o[..., c][sel].mean(), o[..., c][sel].std()
        ratio = float(np.clip(os_ / rs, 0.5, 2.0)) if rs > 1e-3 else 1.0
        r[..., c] = (r[..., c] - rm) * ratio + om
    return cv2.cvtColor(np.clip(r, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def paste_back(image: np.ndarray, restored: np.ndarray, m: np.ndarray, *, strength: float = 1.0,
               color_match: bool = True, mask: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """Blend the restored ``size`` x ``size`` crop back into ``image`` (uint8 RGB, changed in place)
    through the inverse of ``m``. Returns the region touched, or None."""
    cv2 = _cv2()
    size = restored.shape[0]
    inv = invert(m)
    region = paste_region(inv, size, image.shape[:2])
    if region is None:
        return None
    x0, y0, x1, y1 = region
    local = inv.copy()
    local[:, 2] -= (x0, y0)
    rw, rh = x1 - x0, y1 - y0
    if mask is None:
        mask = feather_mask(size)
    if color_match:
        original_crop = warp_face(image, m, size)
        restored = match_colors(restored, original_crop, mask)
    face = cv2.warpAffine(restored, local, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, local, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)
    alpha = np.clip(alpha * float(strength), 0.0, 1.0)[..., None]
    patch = image[y0:y1, x0:x1]
    blended = patch.astype(np.float32) + alpha * (face.astype(np.float32) - patch.astype(np.float32))
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    keep = alpha[..., 0] <= 0.0
    out[keep] = patch[keep]
    image[y0:y1, x0:x1] = out
    return region
