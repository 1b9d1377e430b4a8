"""`python -m ml predict` prints exactly one JSON object per file, errors included, and carries on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.ml.conftest import to_jpeg

FACE_KEYS = [
    "box",
    "detected",
    "detection_confidence",
    "age",
    "age_low",
    "age_high",
    "gender",
    "gender_confidence",
    "left_eye",
    "right_eye",
]


def test_predict_prints_the_schema_for_files_and_folders(tmp_path, astronaut, sideways_heic):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested" / "astronaut.jpg").write_bytes(to_jpeg(astronaut))
    (folder / "nested" / "IMG_0042.HEIC").write_bytes(sideways_heic)  # an iPhone photo, taken sideways
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    single = tmp_path / "single.jpg"
    single.write_bytes(to_jpeg(astronaut))

    result = subprocess.run(
        [sys.executable, "-m", "ml", "predict", str(single), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [
        str(single),
        str(folder / "broken.png"),
        str(folder / "nested" / "IMG_0042.HEIC"),
        str(folder / "nested" / "astronaut.jpg"),
    ]
    good, broken, iphone, nested = lines
    assert [face["gender"] for face in iphone["faces"]] == ["female"]
    assert iphone["faces"][0]["box"][3] < 300  # found upright: her face in the top of the portrait
    assert list(good) == ["file", "faces"] and list(nested) == ["file", "faces"]
    assert list(broken) == ["file", "error"] and "image" in broken["error"]
    [face] = good["faces"]
    assert list(face) == FACE_KEYS
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert face["gender"] in ("female", "male") and face["detected"] is True
    assert face["age_low"] <= face["age"] <= face["age_high"]
    x1, y1, x2, y2 = face["box"]
    for eye in (face["left_eye"], face["right_eye"]):
        assert all(isinstance(v, int) for v in eye) and x1 < eye[0] < x2 and y1 < eye[1] < y2
    assert face["left_eye"][0] > face["right_eye"][0]  # the person's left: on the right of the photo
    assert result.returncode == 1  # one file could not be read


def test_fallback_flag_marks_whole_image_faces(tmp_path):
    import numpy as np

    blank = tmp_path / "blank.jpg"
    blank.write_bytes(to_jpeg(np.full((120, 160, 3), 90, np.uint8)))
    out = subprocess.run(
        [sys.executable, "-m", "ml", "predict", "--fallback-whole-image", str(blank)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    [line] = [json.loads(x) for x in out.stdout.splitlines()]
    [face] = line["faces"]
    assert face["detected"] is False and face["box"] == [0, 0, 160, 120]
    assert face["left_eye"] is None and face["right_eye"] is None  # assumed, not found
    assert out.returncode == 0
