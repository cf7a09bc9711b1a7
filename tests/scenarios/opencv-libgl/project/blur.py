"""Blurs a synthetic image with OpenCV."""

import json

import cv2
import numpy as np

image = np.zeros((64, 64), dtype=np.uint8)
image[16:48, 16:48] = 255
blurred = cv2.GaussianBlur(image, (5, 5), 1.5)
json.dump(
    {"sum": int(blurred.sum()), "edges": int((cv2.Canny(image, 50, 150) > 0).sum())},
    open("metrics.json", "w"),
)
