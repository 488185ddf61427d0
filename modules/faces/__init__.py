"""Face detection with a real trained detector (MTCNN, Zhang et al. 2016) run by Visage's own code.

* :mod:`.mtcnn`: the three small nets (P-Net, R-Net, O-Net) and loading their weights;
* :mod:`.boxes`: box arithmetic (NMS, calibration, squaring), torch only;
* :mod:`.detect`: the cascade, ``MtcnnDetector.detect(rgb) -> list[DetectedFace]``;
* :mod:`.weights`: where the weights live and ``fetch-face-detector`` (taken from the facenet-pytorch wheel).

Nothing is imported at package import time: torch loads when a submodule that needs it is imported.
"""
