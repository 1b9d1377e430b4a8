"""Faces of a group photo are numbered as a person reads it: rows from the top, each from the left."""

from __future__ import annotations

import random
from types import SimpleNamespace

from predictions.models import in_reading_order


def face(x: float, y: float, size: float = 100.0) -> SimpleNamespace:
    return SimpleNamespace(box=(x, y, x + size, y + size), name=f"{x:.0f},{y:.0f}")


def test_a_group_photo_reads_row_by_row_left_to_right():
    # Two rows of three, not quite aligned (people stand at different heights), sizes differ.
    back = [face(100, 95, 90), face(400, 120, 110), face(700, 100)]
    front = [face(80, 420, 130), face(420, 400), face(760, 440, 80)]
    shuffled = back + front
    random.Random(4).shuffle(shuffled)
    assert [f.name for f in in_reading_order(shuffled)] == [f.name for f in back + front]


def test_largest_first_is_not_the_order_shown():
    small_left, big_right = face(10, 50, 40), face(300, 20, 200)  # same row: their centres 70 and 120
    assert in_reading_order([big_right, small_left]) == [small_left, big_right]


def test_a_face_well_below_starts_a_new_row_even_when_further_left():
    top_right, lower_left = face(500, 0), face(0, 80)  # centres 50 and 130 apart by 0.8 of a face
    assert in_reading_order([lower_left, top_right]) == [top_right, lower_left]
    assert in_reading_order([]) == []
