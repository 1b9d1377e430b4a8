"""BlazeFace proposing to MTCNN's RNet and ONet: the same faces as MTCNN's own pyramid, from real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ml.detection import FaceDetector
from ml.proposals import INPUT_PX, TILE_PX, BlazeFace, SizedModels, as_mtcnn_boxes, merge, model_path
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
    ours = refine(Nets(), astronaut, candidates.copy(), nms_rnet=0.7)  # the package's own
    theirs = MTCNN(stages=[Given(), *stages]).detect_faces([astronaut], candidates=candidates.copy())[0]
    assert len(ours) == len(theirs) == 1
    assert np.abs(np.subtract(ours[0]["box"], theirs[0]["box"])).max() <= 1
    assert abs(ours[0]["confidence"] - theirs[0]["confidence"]) < 1e-3
    for key, point in ours[0]["keypoints"].items():
        assert np.abs(np.subtract(point, theirs[0]["keypoints"][key])).max() <= 1


def test_a_sized_copy_of_the_network_answers_as_the_shipped_file_does_at_its_own_size():
    from ai_edge_litert.interpreter import Interpreter

    pixels = np.random.default_rng(3).uniform(-1, 1, (1, INPUT_PX, INPUT_PX, 3)).astype(np.float32)
    shipped = Interpreter(model_path=str(model_path()))
    shipped.allocate_tensors()
    answers = []
    for interpreter in (shipped, SizedModels()(INPUT_PX, INPUT_PX).interpreter):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
        interpreter.invoke()
        answers.append([interpreter.get_tensor(o["index"]).copy() for o in interpreter.get_output_details()])
    for mine, theirs in zip(*answers, strict=True):
        assert np.array_equal(mine, theirs)
    with pytest.raises(ValueError, match="multiples"):
        SizedModels()(200, 192)


@pytest.mark.parametrize("spot", [(20, 30), (700, 500), (400, 260)])
def test_a_face_too_small_for_the_whole_look_is_proposed_by_the_scaled_look_anywhere(astronaut, spot):
    """A 40-px face in an 800×600 photo (10 px in the whole-photo look, under BlazeFace's reach, which
    misses it in a corner): the one look at the photo scaled as a tile is read proposes it, at a corner,
    at an edge and in the middle."""
    face = Image.fromarray(astronaut).crop((110, 20, 340, 250)).resize((40, 40))
    photo = Image.new("RGB", (800, 600), (120, 125, 130))
    photo.paste(face, spot)
    rgb = np.asarray(photo)
    blazeface = BlazeFace()
    x, y = spot

    def near(proposals):
        centre = (proposals[:, :2] + proposals[:, 2:4]) / 2
        return proposals[(np.abs(centre - (x + 20, y + 20)).max(axis=1) < 12) & (proposals[:, 4] > 0.3)]

    if spot == (20, 30):
        assert len(near(blazeface.look(rgb))) == 0
    proposals, smaller = blazeface.looks(rgb)
    assert len(near(proposals)) > 0
    assert smaller.shape[:2] == (round(600 * INPUT_PX / TILE_PX), round(800 * INPUT_PX / TILE_PX))


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
