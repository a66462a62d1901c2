"""The demo's Volumes tab, through its handlers: the bundled example segmented and scored, its
label volume in the input's geometry, slices redrawn at their true aspect, bad uploads refused by
name."""

from __future__ import annotations

import csv
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from demo.settings import Settings
from demo.volumes import AUTO, MAX_VOXELS, Volumes, busiest_slice, moved, view_files
from tests.conftest import REPO, SHARED_DATA

EXAMPLE = REPO / "examples" / "hippocampus" / "hippocampus_084.nii.gz"
TARGET = REPO / "examples" / "hippocampus" / "hippocampus_084_seg.nii.gz"
MODEL = "hippocampus-unet3d (bundled)"
CT_SERIES = SHARED_DATA / "CT-sample" / "example_ct_dicom"
DICOM_SERIES = SHARED_DATA / "MSD-Hippocampus" / "dicom-series"


@pytest.fixture(scope="module")
def volumes() -> Volumes:
    return Volumes(Settings())


@pytest.fixture(scope="module")
def example(volumes: Volumes) -> tuple:
    """The Segment button's answers on the example: the note, the slices, then the rest."""
    return tuple(volumes.run(MODEL, str(EXAMPLE), str(TARGET), "", "axial"))


def test_the_bundled_example_is_offered_with_the_volume_model_and_its_card(
    volumes: Volumes,
) -> None:
    assert volumes.examples == [[MODEL, str(EXAMPLE), str(TARGET), "", "axial"]]
    assert volumes.offers(MODEL) and volumes.offers("hippocampus-unet3d")  # label or folder
    assert not volumes.offers("drive-unet (bundled)") and not volumes.offers(None)
    card = volumes.card(MODEL)
    assert "MR at 1 x 1 x 1 mm" in card and "Anterior 0.869, Posterior 0.853" in card
    assert "Not for: anything but MRI crops around the hippocampus" in card


def test_the_slices_come_first_then_the_scores_leaving_what_the_visitor_moved(example) -> None:
    cleared, first, last = example
    assert cleared[0] is None and "Segmenting" in cleared[1] and "34 x 52 x 37" in cleared[1]
    assert cleared[5:7] == (None, None) and cleared[-4:] == (None,) * 4  # the last volume's
    shown, note, rows, label_file, _, _, _, window, _, plot, *views = first
    assert rows == [] and label_file is None and plot is None and "Scoring" in note
    assert window == AUTO and all(Path(view).is_file() for view in views)
    assert last[0] is shown and "Scoring" not in last[1]
    assert last[7:9] == (gr.skip(), gr.skip()) and last[-4:] == (gr.skip(),) * 4  # kept as moved


def test_the_example_is_scored_per_class_and_its_labels_lie_on_the_input(example) -> None:
    _, first, last = example
    shown, note, rows, label_file, csv_file, surface, target, _, _, plot, *_ = last
    slider, views = first[8], first[-4:]
    assert [row[0] for row in rows] == ["Anterior", "Posterior"]
    dice = {row[0]: row[1] for row in rows}
    assert dice == pytest.approx({"Anterior": 0.857, "Posterior": 0.878}, abs=0.01)  # README
    written, given = nib.load(label_file), nib.load(EXAMPLE)
    assert written.shape == given.shape
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-5)
    # the file's labels are the prediction shown: the canonical array is the file's, x and y
    # reversed (the example is stored RAS)
    labels = np.asarray(written.dataobj)
    np.testing.assert_array_equal(labels[::-1, ::-1, :].transpose(2, 1, 0), shown.prediction)
    assert set(np.unique(labels)) <= {0, 1, 2}
    with open(csv_file, newline="") as handle:
        assert [row[0] for row in csv.reader(handle)] == ["class", "Anterior", "Posterior"]
    assert slider["value"] == busiest_slice(shown, "axial") and slider["maximum"] == 36
    assert Path(plot).is_file() and "34 x 52 x 37 voxels of 1.00 x 1.00 x 1.00 mm" in note
    assert all(Path(view).is_file() for view in views)
    for glb in (surface, target):
        assert Path(glb).read_bytes()[:4] == b"glTF"


def test_moving_the_axis_opens_on_its_busiest_slice_and_redraws_without_the_model(
    example, volumes: Volumes, monkeypatch
) -> None:
    shown = example[1][0]
    monkeypatch.setattr(volumes, "model", None)  # a redraw must not need it
    slider, plot, *views = moved(shown, "sagittal", "bone")
    assert slider["value"] == busiest_slice(shown, "sagittal") and slider["maximum"] == 33
    assert Path(plot).is_file()  # the Dice per slice, now along the sagittal axis
    assert Image.open(views[2]).size != Image.open(example[1][-2]).size  # another plane
    assert view_files(None, "axial", 0, "bone") == [None] * 4  # nothing segmented yet


@pytest.mark.slow  # the 20-slice CT through the 3D model's windows: about 30 s on 2 cores
@pytest.mark.skipif(not CT_SERIES.is_dir(), reason=f"CT sample not found at {CT_SERIES}")
def test_a_ct_series_for_an_mri_model_is_shown_with_a_warning_and_its_true_aspect(
    volumes: Volumes,
) -> None:
    _, first, last = volumes.run(MODEL, str(CT_SERIES), None, "", "coronal")
    shown, note, _, _, _, _, _, window, _, _, image, *_ = first
    rows, target_surface, plot = last[2], last[6], last[9]
    assert "512 x 512 x 20 voxels of 0.98 x 0.98 x 2.00 mm, CT" in note  # positions, not 3 mm
    assert "trained on MR" in note and window == "soft tissue"
    assert rows[0][1] == "" and target_surface is None and plot is None  # no target: volumes
    width, height = Image.open(image).size
    assert height / width == pytest.approx(20 * 2.0 / (512 * 0.9765625), abs=0.01)
    lung, bone = (Image.open(view_files(shown, "axial", 10, w)[0]) for w in ("lung", "bone"))
    assert np.asarray(lung).mean() > np.asarray(bone).mean()  # a wider, lower window: brighter


@pytest.mark.skipif(not DICOM_SERIES.is_dir(), reason=f"DICOM series not found at {DICOM_SERIES}")
def test_a_dicom_zip_s_patient_name_and_id_are_in_no_answer_and_no_file(
    volumes: Volumes, tmp_path
) -> None:
    import zipfile

    import pydicom

    upload = tmp_path / "scan.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for path in sorted(DICOM_SERIES.glob("Study1*/*.dcm")):
            header = pydicom.dcmread(path)
            header.PatientName, header.PatientID = "Doe^Jane", "ID-7731"
            header.save_as(tmp_path / path.name)
            archive.write(tmp_path / path.name, path.name)
    answers = list(volumes.run(MODEL, str(upload), None, "", "axial"))
    files = [
        Path(v) for answer in answers for v in answer if isinstance(v, str) and Path(v).is_file()
    ]
    assert len(files) >= 6  # four views, the label volume, the CSV, a surface
    for text in [str(answer[1]) for answer in answers] + [str(answers[-1][2])]:
        assert "Doe" not in text and "7731" not in text
    for path in files:
        assert b"Doe" not in path.read_bytes() and b"7731" not in path.read_bytes(), path
        assert "Doe" not in path.name and "7731" not in path.name


def test_bad_uploads_are_refused_naming_the_file(volumes: Volumes, tmp_path) -> None:
    png = tmp_path / "photo.png"
    Image.new("L", (8, 8)).save(png)
    with pytest.raises(gr.Error, match=r"photo\.png: not a volume file"):
        next(volumes.run(MODEL, str(png), None, "", "axial"))
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), other)
    with pytest.raises(gr.Error, match=r"other\.nii\.gz: the label volume does not lie on"):
        next(volumes.run(MODEL, str(EXAMPLE), str(other), "", "axial"))
    big = tmp_path / "big.nii"  # a header alone, declaring more voxels than the limit
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((4096, 4096, MAX_VOXELS // 4096**2 + 1))
    big.write_bytes(header.binaryblock + b"\0" * 4)
    with pytest.raises(gr.Error, match=r"big\.nii: .* voxels, over the limit"):
        next(volumes.run(MODEL, str(big), None, "", "axial"))
    for message in ("photo.png", "other.nii.gz"):
        assert str(tmp_path) not in message


def test_surfaces_are_written_as_glb_in_millimetres_in_the_class_colours(tmp_path) -> None:
    import json
    import struct

    from demo.meshes import write_glb
    from demo.overlays import CLASS_COLOURS

    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 2  # a 10-voxel cube of class 2, 2 mm slices: 20 mm tall
    path = write_glb(labels, (2.0, 1.0, 1.0), ["background", "a", "b"], tmp_path / "cube.glb")
    blob = path.read_bytes()
    magic, version, length = struct.unpack("<III", blob[:12])
    assert (magic, version, length) == (0x46546C67, 2, len(blob))
    size, kind = struct.unpack("<II", blob[12:20])
    document = json.loads(blob[20 : 20 + size])
    assert kind == 0x4E4F534A and len(document["meshes"][0]["primitives"]) == 1  # class 1 absent
    colour = document["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"]
    assert colour[:3] == pytest.approx([v / 255 for v in CLASS_COLOURS[1]])
    low, high = document["accessors"][0]["min"], document["accessors"][0]["max"]
    extent = np.subtract(high, low)  # x: W (10 mm), y: up, D (20 mm), z: H (10 mm), smoothed
    assert extent == pytest.approx([10, 20, 10], abs=1.5)
    assert (
        write_glb(np.zeros((4, 4, 4), np.uint8), (1, 1, 1), ["background", "a"], tmp_path / "x.glb")
        is None
    )


def test_a_speckled_prediction_s_surface_is_sampled_coarser_to_stay_small(monkeypatch) -> None:
    from demo import meshes

    speckle = (np.random.default_rng(0).random((48, 48, 48)) > 0.5).astype(np.uint8)
    fine = len(meshes.surfaces(speckle, (1.0, 1.0, 1.0), ["background", "a"])[0][2])
    monkeypatch.setattr(meshes, "MAX_TRIANGLES", fine // 3)
    coarse = len(meshes.surfaces(speckle, (1.0, 1.0, 1.0), ["background", "a"])[0][2])
    assert 0 < coarse <= fine // 3  # a step of 2 or more: a quarter of the triangles or fewer
