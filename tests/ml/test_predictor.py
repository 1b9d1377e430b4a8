"""The public entry point on real photos through the real detector and the shipped model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from ml import Face, ImageError
from tests.ml.conftest import to_jpeg


def test_astronaut_portrait_gives_one_adult_woman(engine, astronaut):
    faces = engine.predict(to_jpeg(astronaut))
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    # the face is in the upper middle of the 512×512 portrait, about 80–130 px wide
    assert 150 < x1 < 220 and 40 < y1 < 110 and 240 < x2 < 300 and 150 < y2 < 210
    assert face.detected and face.detection_confidence > 0.95
    assert face.gender == "female"
    assert 25 <= face.age <= 60
    assert face.age_low <= face.age <= face.age_high
    assert 0.5 <= face.gender_confidence <= 1.0
    assert len(face.landmarks) == 5


def collage(tiles: list[np.ndarray], canvas=(1200, 1600)) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Faces pasted apart from each other on a plain grey canvas; returns the image and tile origins."""
    image = np.full((*canvas, 3), 128, np.uint8)
    origins = []
    columns = 3
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        y, x = 60 + row * 560, 60 + col * 520
        image[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        origins.append((x, y))
    return image, origins


def test_a_collage_of_several_portraits_gives_one_box_each(engine, astronaut):
    face_crop = astronaut[20:320, 120:360]  # the astronaut's head and shoulders
    tiles = [
        face_crop,
        face_crop[:, ::-1],
        np.asarray(Image.fromarray(face_crop).resize((180, 225))),
        np.asarray(Image.fromarray(face_crop).resize((360, 450))),
    ]
    image, origins = collage(tiles)
    faces = engine.predict(to_jpeg(image))
    assert len(faces) == len(tiles)
    centres = sorted(((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces)
    for (x, y), tile in zip(origins, tiles, strict=True):
        inside = [c for c in centres if x < c[0] < x + tile.shape[1] and y < c[1] < y + tile.shape[0]]
        assert len(inside) == 1


def test_a_collage_of_dataset_faces_gives_one_box_each(engine, datasets_dir):
    with (datasets_dir / "utkface" / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if 20 <= int(r["age"]) <= 60][::997][:6]
    tiles = [
        np.asarray(Image.open(datasets_dir / "utkface" / r["file"]).convert("RGB").resize((300, 300)))
        for r in rows
    ]
    image, _ = collage(tiles)
    assert len(engine.predict(to_jpeg(image))) == len(tiles)


def test_exif_rotated_photo_gives_the_same_answer_as_the_upright_one(engine, astronaut):
    upright = engine.predict(to_jpeg(astronaut))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated, "rotate 90° clockwise to view"
    stored = np.ascontiguousarray(np.rot90(astronaut, k=1))
    rotated = engine.predict(to_jpeg(stored, exif=exif.tobytes()))
    assert len(rotated) == len(upright) == 1
    assert np.abs(np.subtract(rotated[0].box, upright[0].box)).max() <= 4
    assert rotated[0].gender == upright[0].gender
    assert abs(rotated[0].age - upright[0].age) < 3


def test_no_face_gives_an_empty_list_or_a_whole_image_face(engine):
    ramp = np.linspace(30, 220, 400, dtype=np.uint8)
    blank = to_jpeg(np.stack([np.tile(ramp, (300, 1))] * 3, axis=-1))
    assert engine.predict(blank) == []
    [whole] = engine.predict(blank, whole_image_fallback=True)
    assert whole.detected is False and whole.box == (0, 0, 400, 300)


def test_fallback_aligns_a_weakly_detected_face_instead_of_taking_the_whole_frame(engine, astronaut):
    # a tight crop of the face, tilted 35°, blurred and faded: MTCNN's confidence stays under
    # MIN_CONFIDENCE, turned or not
    tight = Image.fromarray(astronaut).crop((150, 20, 290, 190))
    tilted = tight.rotate(35, resample=Image.BILINEAR, fillcolor=(128, 128, 128))
    hard = np.asarray(ImageEnhance.Contrast(tilted.filter(ImageFilter.GaussianBlur(3))).enhance(0.5))
    photo = to_jpeg(hard)
    assert engine.predict(photo) == []
    [face] = engine.predict(photo, whole_image_fallback=True)
    assert face.detected is False and 0.5 <= face.detection_confidence < 0.9
    # the face's own box (about x 28–114, y 47–145 in the 140×170 crop), not the frame
    x1, y1, x2, y2 = face.box
    assert 15 < x1 < 45 and 30 < y1 < 60 and 105 < x2 < 140 and 130 < y2 < 160
    eyes = np.array(face.landmarks[:2])
    assert ((eyes >= (x1, y1)) & (eyes <= (x2, y2))).all()
    assert face.gender == "female" and 20 <= face.age <= 60


def test_the_compiled_detector_finds_what_the_mtcnn_package_finds(engine, astronaut):
    """MTCNN's whole pipeline, its pyramid included, compiled here: the package's faces (BlazeFace's
    candidates, `ml.proposals`, are compared with the pyramid in tests/ml/test_proposals.py)."""
    from mtcnn import MTCNN

    from ml.detection import FaceDetector

    detector = FaceDetector(proposer="pyramid")
    detector.mtcnn = engine.detector.mtcnn

    photos = [np.asarray(Image.fromarray(astronaut).resize(size)) for size in ((640, 480), (500, 700))]
    tile = astronaut[:200, 130:330]  # photos within DETECT_MAX_SIDE: the detector sees them unscaled
    photos.append(collage([tile, tile[:, ::-1]], canvas=(400, 800))[0])
    package = MTCNN()  # eager, as the package ships it
    for photo in photos:
        found = detector.detect(photo)
        expected = [f for f in package.detect_faces(photo, min_face_size=20) if f["confidence"] >= 0.9]
        assert len(found) == len(expected) >= 1
        by_left = sorted(expected, key=lambda f: f["box"][0])
        for det, face in zip(sorted(found, key=lambda d: d.box[0]), by_left, strict=True):
            x, y, w, h = face["box"]
            assert np.allclose(det.box, (x, y, x + w, y + h), atol=1.5)
            assert det.confidence == pytest.approx(face["confidence"], abs=1e-3)


def test_turned_points_map_back_onto_the_photo_as_it_came():
    from ml.detection import unturn

    height, width = 5, 8
    marks = np.arange(height * width).reshape(height, width)
    for k in (1, 2, 3):
        turned = np.rot90(marks, k)
        rows, cols = np.indices(turned.shape)
        centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)  # x, y of each pixel's centre
        x, y = unturn(centres, k, width, height).T
        assert np.array_equal(marks[(y - 0.5).astype(int), (x - 0.5).astype(int)], turned.ravel())


@pytest.mark.parametrize("turns", [1, 2])
def test_a_photo_turned_without_an_orientation_tag_is_searched_turned_back(engine, astronaut, turns):
    upright = engine.predict(to_jpeg(astronaut))[0]
    [face] = engine.predict(to_jpeg(np.ascontiguousarray(np.rot90(astronaut, turns))))
    # the upright face's box, turned the same way (the photo is 512 × 512)
    x1, y1, x2, y2 = upright.box
    expected = (y1, 512 - x2, y2, 512 - x1) if turns == 1 else (512 - x2, 512 - y2, 512 - x1, 512 - y1)
    assert np.allclose(face.box, expected, atol=15)
    assert face.detected and face.gender == "female" and abs(face.age - upright.age) < 8


def test_large_photos_are_detected_small_and_reported_in_original_pixels(engine, astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048)))
    [face] = engine.predict(to_jpeg(big))
    [small] = engine.predict(to_jpeg(astronaut))
    assert np.allclose(np.array(face.box) / 4, small.box, atol=6)


def test_several_images_are_answered_in_one_call(engine, astronaut):
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    results = engine.predict_many([to_jpeg(astronaut), np.stack([ramp] * 3, axis=-1)])
    assert [len(r) for r in results] == [1, 0]
    assert all(isinstance(f, Face) for f in results[0])


def test_photos_answered_together_get_the_answers_they_get_alone(engine, astronaut, datasets_dir):
    """MTCNN's batches move landmarks (up to 10 px) and can add or lose a face; each photo is detected
    alone, so a photo's answer does not depend on the photos sent with it."""
    names = [row["file"] for row in csv.DictReader((datasets_dir / "aaf-train" / "labels.csv").open())]
    photos = [np.asarray(Image.open(datasets_dir / "aaf-train" / name).convert("RGB")) for name in names[:12]]
    photos += [astronaut, np.asarray(Image.fromarray(astronaut).resize((300, 300)))]
    together = engine.predict_many(photos)
    alone = [engine.predict(photo) for photo in photos]
    assert len({photo.shape for photo in photos}) > 5
    for one, other in zip(together, alone, strict=True):
        assert [(f.box, f.landmarks, f.age, f.gender_confidence) for f in one] == [
            (f.box, f.landmarks, f.age, f.gender_confidence) for f in other
        ]


def test_bad_input_raises_image_error(engine):
    with pytest.raises(ImageError):
        engine.predict(b"not an image")


def test_model_output_is_a_distribution_and_a_probability(engine):
    rng = np.random.default_rng(1)
    chips = rng.integers(0, 255, (16, engine.input_size, engine.input_size, 3), dtype=np.uint8)
    ages, males = engine.predict_chips(chips)
    assert ages.shape == (16, 101) and males.shape == (16,)
    assert np.allclose(ages.sum(axis=1), 1.0, atol=1e-4)
    assert np.all((males >= 0) & (males <= 1))


def test_each_model_input_gets_its_own_framing_of_the_face(engine, astronaut):
    rgb = np.asarray(astronaut)
    (face,) = engine.predict(rgb)
    chips = engine.chips_of(rgb, np.array(face.landmarks))
    assert set(chips) == set(engine.input_specs) and "image" in chips
    for name, (_, size) in engine.input_specs.items():
        assert chips[name].shape == (1, size, size, 3) and chips[name].dtype == np.uint8
    if "face" in chips:  # the fused model: the tight framing is a different crop, not a copy
        assert np.abs(chips["face"].astype(float) - chips["image"]).mean() > 20
    ages, males = engine.predict_chips(chips)
    # the model alone on these chips gives what predict() reported (landmarks were rounded to 0.1 px)
    assert abs(float(ages[0] @ np.arange(101)) - face.age) < 0.5
    assert (males[0] >= 0.5) == (face.gender == "male")


def test_a_face_small_in_the_photo_gets_a_wider_range(engine, astronaut):
    """A small face's chip is enlarged from few pixels and read worse; its range is widened by the
    manifest's fitted factor (`interval.small_faces`), a large face's is not."""
    table = engine.small_faces
    assert table and table["factor"][0] > 1.2 and table["factor"][-1] < table["factor"][0]
    large = engine.predict(astronaut)[0]
    # shrunk until the eyes are about 10 px apart (the detector's smallest faces: 20 px boxes), the photo's
    # edges carried outwards around it
    factor = 10.5 / (large.landmarks[1][0] - large.landmarks[0][0])
    side = round(512 * factor)
    small = np.asarray(Image.fromarray(astronaut).resize((side, side), Image.Resampling.BOX))
    canvas = np.pad(small, ((side, side), (side, side), (0, 0)), mode="edge")

    widened = engine.predict(canvas)
    engine.small_faces = None  # the same photos without the widening
    try:
        plain = engine.predict(canvas)
        plain_large = engine.predict(astronaut)[0]
    finally:
        engine.small_faces = table
    assert len(widened) == len(plain) == 1
    (face,), (unwidened,) = widened, plain
    assert face.age == unwidened.age and face.gender_confidence == unwidened.gender_confidence
    assert face.age_low <= unwidened.age_low and face.age_high >= unwidened.age_high
    assert face.age_high - face.age_low > unwidened.age_high - unwidened.age_low
    assert (large.age_low, large.age_high) == (plain_large.age_low, plain_large.age_high)


def test_a_blurred_face_gets_a_wider_range_and_a_sharp_one_does_not(engine, astronaut):
    """A photo out of focus: the face's chip holds less detail and is read worse; its range is widened
    by the manifest's fitted factor for its chip's sharpness (`interval.blurred_faces`), the same face
    in focus keeps its range."""
    table = engine.blurred_faces
    assert table and table["factor"][0] > 1.2 and table["factor"][-1] < table["factor"][0]
    eyes = engine.predict(astronaut)[0].landmarks
    radius = 0.09 * (eyes[1][0] - eyes[0][0])  # one of the blurs the factors were fitted at
    blurred = np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(radius)))
    sharp, soft = engine.predict(astronaut), engine.predict(blurred)
    engine.blurred_faces = None  # the same photos without the widening
    try:
        plain_sharp, plain_soft = engine.predict(astronaut), engine.predict(blurred)
    finally:
        engine.blurred_faces = table
    assert len(sharp) == len(soft) == len(plain_soft) == 1
    (face,), (unwidened,) = soft, plain_soft
    assert face.age == unwidened.age and face.gender_confidence == unwidened.gender_confidence
    assert face.age_low <= unwidened.age_low and face.age_high >= unwidened.age_high
    assert face.age_high - face.age_low > unwidened.age_high - unwidened.age_low
    assert (sharp[0].age_low, sharp[0].age_high) == (plain_sharp[0].age_low, plain_sharp[0].age_high)


def test_a_small_face_in_a_phone_sized_photo_is_found(engine, astronaut):
    """A 4000×3000 photo is detected at 800 px; a face 40 px wide there is 8 px, under MTCNN's default
    20-px search, and used to be missed. It is searched down to the detector's 12-px window."""
    portrait = Image.fromarray(astronaut).resize((250, 250), Image.Resampling.LANCZOS)  # face about 40 px
    photo = np.full((3000, 4000, 3), 118, np.uint8)
    photo[1400:1650, 2300:2550] = np.asarray(portrait)
    faces = engine.predict(to_jpeg(photo))
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert 2300 < x1 < x2 < 2550 and 1400 < y1 < y2 < 1650 and 30 < x2 - x1 < 60
    assert face.gender == "female" and 25 <= face.age <= 60
