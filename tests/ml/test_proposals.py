"""BlazeFace proposing to MTCNN's RNet and ONet: the same faces as MTCNN's own pyramid, from real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ml.detection import FaceDetector
from ml.proposals import INPUT_PX, MIN_FACE_INPUT_PX, TILE_PX, BlazeFace, as_mtcnn_boxes, merge, tiles
from ml.refine import Nets, refine


@pytest.fixture(scope="module")
def pyramid(engine) -> FaceDetector:
    detector = FaceDetector(proposer="pyramid")
    detector.mtcnn = engine.detector.mtcnn  # the same compiled networks
    return detector


@pytest.fixture(scope="module")
def photos(astronaut) -> dict[str, np.ndarray]:
    """The astronaut as a portrait, as a tight crop, small in a large photo, and four times in a group."""
    face = Image.fromarray(astronaut).crop((110, 20, 340, 250))
    group = Image.new("RGB", (1600, 1200), (150, 160, 170))
    for side, spot in zip(
        (90, 140, 220, 320), ((100, 100), (700, 150), (200, 700), (1000, 600)), strict=True
    ):
        group.paste(face.resize((side, side)), spot)
    small = Image.new("RGB", (1024, 768), (90, 90, 90))
    small.paste(face.resize((70, 70)), (480, 300))
    return {
        "portrait": astronaut,
        "crop": astronaut[20:250, 110:340],
        "small face": np.asarray(small),
        "group": np.asarray(group),
    }


def test_it_finds_the_faces_the_pyramid_finds_with_the_same_landmarks(engine, pyramid, photos):
    for name, photo in photos.items():
        ours, theirs = engine.detector.detect(photo), pyramid.detect(photo)
        assert len(ours) == len(theirs) > 0, name
        for a, b in zip(ours, theirs, strict=True):  # both largest first
            eyes = np.linalg.norm(b.landmarks[0] - b.landmarks[1])
            step = max(photo.shape[:2]) / 800  # MTCNN's whole pixels at detection scale (`DETECT_MAX_SIDE`)
            assert np.abs(a.landmarks - b.landmarks).max() <= 0.1 * eyes + max(1.0, step), name
            assert a.confidence > 0.9


def test_a_photo_without_a_face_gets_none(engine):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    flat = np.full((480, 640, 3), 200, np.uint8)
    assert engine.detector.detect(noise) == [] and engine.detector.detect(flat) == []


def test_refine_reads_candidates_as_the_packages_own_stages_do(engine, astronaut):
    """`ml.refine` cuts its patches from the uint8 photo and runs the networks on LiteRT; the package cuts
    them from the normalised photo and runs them on TensorFlow. On the same candidates, one of them
    reaching past the photo's edge, the same faces come out."""
    from mtcnn import MTCNN

    class Given:
        id, name = 102, "given candidates"

        def __call__(self, bboxes_batch=None, candidates=None, **kwargs):
            return candidates

    proposals = BlazeFace().propose(astronaut)
    candidates = as_mtcnn_boxes(proposals)
    edge = candidates[:1].copy()
    edge[0, 1:5] = (-60, 40, 200, 300)  # a square past the left edge
    candidates = np.concatenate([candidates, edge]).astype(np.float32)
    from mtcnn.utils.bboxes import resize_to_square

    candidates = resize_to_square(candidates)
    stages = engine.detector.mtcnn.stages[1:]
    ours = refine(Nets(), astronaut, candidates.copy())
    theirs = MTCNN(stages=[Given(), *stages]).detect_faces([astronaut], candidates=candidates.copy())[0]
    assert len(ours) == len(theirs) == 1
    assert np.abs(np.subtract(ours[0]["box"], theirs[0]["box"])).max() <= 1
    assert abs(ours[0]["confidence"] - theirs[0]["confidence"]) < 1e-3
    for key, point in ours[0]["keypoints"].items():
        assert np.abs(np.subtract(point, theirs[0]["keypoints"][key])).max() <= 1


@pytest.mark.parametrize("size", [(640, 480), (800, 600), (800, 450), (300, 800), (321, 321)])
def test_tiles_cover_the_photo_and_overlap_by_the_largest_face_a_whole_look_may_miss(size):
    width, height = size
    windows = tiles(width, height)
    assert all(x2 - x1 <= TILE_PX and y2 - y1 <= TILE_PX for x1, y1, x2, y2 in windows)
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in windows:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    face = int(MIN_FACE_INPUT_PX * max(width, height) / INPUT_PX)  # any face this size is whole in a tile
    for x in range(0, width - face, 7):
        for y in range(0, height - face, 7):
            assert any(
                x1 <= x and x + face <= x2 and y1 <= y and y + face <= y2 for x1, y1, x2, y2 in windows
            )


def test_merge_keeps_the_best_of_overlapping_proposals():
    proposals = np.array(
        [[0, 0, 10, 10, 0.5], [1, 1, 11, 11, 0.9], [50, 50, 60, 60, 0.3], [0, 0, 10, 10.5, 0.2]], np.float32
    )
    kept = merge(proposals)
    assert kept[:, 4].tolist() == pytest.approx([0.9, 0.3])


@pytest.mark.parametrize("name, side", [("rnet", 24), ("onet", 48)])
def test_the_shipped_litert_networks_answer_as_the_packages_do(engine, name, side):
    """ml/models/mtcnn is the package's RNet and ONet (`python -m ml.training.export mtcnn`)."""
    stage = next(s for s in engine.detector.mtcnn.stages if name in type(s).__name__.lower())
    patches = np.random.default_rng(1).uniform(-1, 1, (7, side, side, 3)).astype(np.float32)
    theirs = [np.asarray(out) for out in stage._model(patches)]
    ours = Nets()(name, patches)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    for mine, package in zip(ours, theirs, strict=True):
        assert np.abs(mine - package).max() < 1e-4


def test_pnet_on_litert_proposes_what_the_packages_pnet_stage_does(engine, astronaut):
    """`ml.pyramid`: the same pyramid, hits and merging as the package's StagePNet; the photo is scaled by
    Pillow's box filter instead of TensorFlow's area resize, so a few candidates differ by a pixel."""
    import tensorflow as tf
    from mtcnn.utils.images import standarize_batch

    from ml.pyramid import Pyramid

    photo = np.full((600, 800, 3), 120, np.uint8)
    photo[100:400, 200:500] = np.asarray(Image.fromarray(astronaut).resize((300, 300)))
    ours = Pyramid().candidates(photo, 12.0)
    normalised, shapes, _ = standarize_batch([tf.constant(photo, tf.float32)], normalize=True)
    theirs = engine.detector.mtcnn.stages[0](
        images_normalized=normalised, images_oshapes=shapes, min_face_size=12
    )
    assert abs(len(ours) - len(theirs)) <= 0.1 * len(theirs)
    for row in ours[:10]:  # the best candidates: each has a twin within 4 px or 15% of its side
        side = row[3] - row[1]
        assert np.abs(theirs[:, 1:5] - row[1:5]).max(axis=1).min() <= max(4.0, 0.15 * side)


def test_a_box_holding_a_smaller_face_is_dropped_and_the_faces_inside_kept(engine, astronaut):
    """A blurred, enlarged face behind three small sharp ones (BlazeFace's whole look sees the backdrop
    as a face): the three are found, the backdrop is not."""
    from PIL import ImageFilter

    from ml.refine import holds_another

    rows = np.array([[0, 0, 0, 100, 100, 0.99], [0, 10, 10, 30, 30, 0.95], [0, 50, 50, 90, 95, 0.9]])
    assert holds_another(rows).tolist() == [True, False, False]
    backdrop = (
        Image.fromarray(astronaut).crop((110, 20, 340, 250)).resize((1600, 1600)).crop((0, 200, 1600, 1400))
    )
    photo = backdrop.filter(ImageFilter.GaussianBlur(20))
    face = Image.fromarray(astronaut).crop((110, 20, 340, 250)).resize((200, 200))
    for spot in ((300, 500), (700, 550), (1100, 500)):
        photo.paste(face, spot)
    found = engine.detector.detect(np.asarray(photo))
    assert len(found) == 3
    assert all(d.box[2] - d.box[0] < 250 for d in found)
