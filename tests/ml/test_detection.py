"""Faces cut by the frame's edge: found, reported inside the photo, and never twice."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.detection import FaceDetector
from tests.ml.conftest import to_jpeg

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "detector_recall.py"


@pytest.fixture(scope="module")
def recall_bench():
    spec = importlib.util.spec_from_file_location("detector_recall", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loose_face(astronaut) -> Image.Image:
    return Image.fromarray(astronaut).crop((110, 20, 340, 250))


def test_a_group_selfie_with_faces_cut_by_the_frame_finds_them(engine, recall_bench, loose_face):
    """Seven faces, three with half of their crop outside the left, right and bottom edges (the frame
    cuts through the nose): all seven found, each once, each box inside the photo and on its face."""
    photo, boxes = recall_bench.cut_selfie(loose_face, cut=0.5)
    height, width = photo.shape[:2]
    found = engine.detector.detect(photo)
    assert recall_bench.found_in(found, boxes) == [True] * 7
    assert len(found) == 7
    for d in found:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    edges = sorted(found, key=lambda d: d.box[0])
    assert edges[0].box[0] == 0 and edges[-1].box[2] == width  # the cut faces reach the edge
    assert max(d.box[3] for d in found) == height


def test_the_cut_faces_were_missed_without_the_frame_cut_search(engine, recall_bench, loose_face):
    photo, boxes = recall_bench.cut_selfie(loose_face, cut=0.5)
    plain = FaceDetector(cut_faces=False)
    plain.mtcnn = engine.detector.mtcnn  # the same compiled networks
    hits = recall_bench.found_in(plain.detect(photo), boxes)
    assert hits[:4] == [True] * 4 and sum(hits[4:]) < 3


def test_a_whole_face_beside_the_edge_is_not_reported_again_as_its_mirror_image(engine, loose_face):
    photo = np.full((900, 1200, 3), 128, np.uint8)
    photo[300:540, 4:244] = np.asarray(loose_face.resize((240, 240)))
    photo[300:540, 956:1196] = np.asarray(loose_face.resize((240, 240)))
    found = engine.detector.detect(photo)
    assert len(found) == 2
    left, right = sorted(found, key=lambda d: d.box[0])
    assert left.box[0] > 4 and left.box[2] < 244 and right.box[0] > 956 and right.box[2] < 1196


def test_a_face_found_in_the_mirrored_border_is_mapped_back_and_clipped():
    """`_convert`'s arithmetic alone: a box found in a photo scaled by 0.25 and padded by 80 px maps back
    to original pixels and is clipped to the photo, while its landmarks keep where they fell."""
    detector = FaceDetector.__new__(FaceDetector)
    detector.min_confidence, detector.min_face_px = 0.9, 20
    keypoints = {"left_eye": (70, 110), "right_eye": (100, 110), "nose": (85, 125)}
    keypoints |= {"mouth_left": (72, 140), "mouth_right": (98, 140)}
    raw = [{"box": (60, 90, 50, 60), "confidence": 0.99, "keypoints": keypoints}]
    [d] = detector.convert_raw(raw, 0.25, 80, (1200, 1600, 3))
    assert d.box == (0.0, 40.0, 120.0, 280.0)  # x from -80 clipped to 0
    assert np.allclose(d.landmarks[0], (-40, 120)) and np.allclose(d.landmarks[2], (20, 180))


def test_a_cut_face_gets_an_age_and_gender(engine, recall_bench, loose_face):
    photo, _ = recall_bench.cut_selfie(loose_face, cut=0.5)
    faces = engine.predict(to_jpeg(photo))
    assert len(faces) == 7
    assert all(f.gender == "female" and 15 <= f.age <= 70 for f in faces)


def test_handing_mtcnn_one_tensor_finds_the_same_faces_to_the_bit(
    engine, recall_bench, loose_face, astronaut
):
    import mtcnn.mtcnn as package

    photos = [astronaut, recall_bench.cut_selfie(loose_face, cut=0.5)[0], astronaut[:200, 130:330]]
    detector = FaceDetector(proposer="pyramid")  # the package's whole pipeline, PNet's pyramid first
    detector.mtcnn = engine.detector.mtcnn
    once = package.standarize_batch
    assert once.once
    fast = [detector.detect(photo) for photo in photos]
    package.standarize_batch = once.plain
    try:
        plain = [detector.detect(photo) for photo in photos]
    finally:
        package.standarize_batch = once
    assert [len(f) for f in fast] == [len(p) for p in plain] == [1, 7, 1]
    for ours, theirs in zip(fast, plain, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert a.box == b.box and a.confidence == b.confidence
            assert np.array_equal(a.landmarks, b.landmarks)
