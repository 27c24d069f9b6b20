"""Stimulus targets: rendered glyphs and a user's folder of class images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortexflow.data.stimuli import (
    CRELL_LETTERS,
    DIGIT_CLASSES,
    class_images,
    font_path,
    load_stimulus_folder,
    render_glyphs,
    targets_for_labels,
)
from cortexflow.exceptions import DataValidationError
from cortexflow.reporting.figures import save_stimulus_sheet

SHARED = Path(os.environ.get("CORTEXFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@pytest.mark.parametrize("names", [DIGIT_CLASSES, CRELL_LETTERS])
def test_rendered_glyphs_are_white_on_black_and_distinct(names):
    imgs = render_glyphs(names)
    assert imgs.shape == (10, 28, 28) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 1 and imgs.max() > 0.95
    border = np.concatenate([imgs[:, :3].ravel(), imgs[:, -3:].ravel(), imgs[:, :, :3].ravel(), imgs[:, :, -3:].ravel()])
    assert border.max() < 0.05  # MNIST-like: the glyph sits in the central 20x20 box
    assert 0.08 < imgs.mean() < 0.4
    flat = imgs.reshape(10, -1)
    corr = np.corrcoef(flat)
    assert corr[~np.eye(10, dtype=bool)].max() < 0.95  # every class looks different
    np.testing.assert_array_equal(render_glyphs(names), imgs)  # deterministic


def test_glyphs_are_upright():
    one = render_glyphs(["1"])[0]
    rows, cols = np.nonzero(one > 0.5)
    assert np.ptp(rows) > np.ptp(cols)  # a "1" is taller than wide
    seven = render_glyphs(["7"])[0]
    assert seven[:10].sum() > seven[18:].sum()  # the bar of a 7 is at the top


def test_font_and_errors():
    assert font_path().name == "DejaVuSans-Bold.ttf" and font_path("regular").is_file()
    with pytest.raises(DataValidationError, match="single character"):
        render_glyphs(["ab"])
    with pytest.raises(DataValidationError, match="weight"):
        font_path("italic")


def test_folder_layout_polarity_and_missing(tmp_path):
    rng = np.random.default_rng(0)
    dark_on_white = np.full((40, 40), 255, np.uint8)
    dark_on_white[10:30, 18:22] = 0
    Image.fromarray(dark_on_white).save(tmp_path / "a.png")
    light_on_black = np.zeros((28, 28), np.uint8)
    light_on_black[5:20, 5:20] = 200
    Image.fromarray(light_on_black).convert("RGB").save(tmp_path / "d.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    imgs, names = load_stimulus_folder(tmp_path)
    assert names == ("a", "d") and imgs.shape == (2, 28, 28)
    assert imgs[0, 0, 0] < 0.05 and imgs[0, 14, 14] > 0.9  # inverted to white on black
    assert imgs[1, 0, 0] < 0.05 and imgs[1, 10, 10] > 0.7  # kept
    raw, _ = load_stimulus_folder(tmp_path, ["a"], invert=False)
    assert raw[0, 0, 0] > 0.95
    with pytest.raises(DataValidationError, match=r"no image for class\(es\) \['e'\]"):
        load_stimulus_folder(tmp_path, ["a", "e"])
    with pytest.raises(DataValidationError, match="no such stimulus folder"):
        load_stimulus_folder(tmp_path / "nope")
    (tmp_path / "e.png").write_bytes(rng.bytes(20))
    with pytest.raises(DataValidationError, match="cannot be read as an image"):
        load_stimulus_folder(tmp_path, ["e"])


def test_shared_stimulus_folders_if_present():
    folder = SHARED / "stimuli"
    if not folder.is_dir():
        pytest.skip(f"no shared stimuli at {folder}")
    letters = class_images(CRELL_LETTERS, folder / "crell_letters")
    digits = class_images(DIGIT_CLASSES, folder / "mindbigdata_digits")
    for imgs in (letters, digits):
        assert imgs.shape == (10, 28, 28)
        assert np.median(imgs[:, 0, :]) < 0.1  # white glyph on black after loading


def test_targets_for_labels_and_sheet(tmp_path):
    imgs = class_images(DIGIT_CLASSES)
    Y = targets_for_labels(np.array([3, 3, 9]), imgs)
    np.testing.assert_array_equal(Y[0], imgs[3])
    assert Y.shape == (3, 28, 28)
    with pytest.raises(DataValidationError, match="drop random trials"):
        targets_for_labels([1, -1], imgs)
    png = save_stimulus_sheet(imgs, DIGIT_CLASSES, tmp_path / "sheet.png")
    assert png.stat().st_size > 1000
