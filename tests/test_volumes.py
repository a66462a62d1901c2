"""Volumes: reading with geometry, layouts and splits, scores in mm and mL, 3D inference and
training, predict over series, and every bad input refused by name."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

import zoo
from tests.conftest import SHARED_DATA
from trainers.data.errors import DataError
from trainers.fit.plan_rules import Hardware
from trainers.scores.surface import class_volumes_ml, volume_scores
from trainers.volumes.cases import Ready, read_case
from trainers.volumes.image import read_label_volume, read_volume, write_labels
from trainers.volumes.infer import VolumeRecipe, predict_volume
from trainers.volumes.intensity import Intensity
from trainers.volumes.layouts import parse_volume_spec
from trainers.volumes.patches import PatchSampler
from trainers.volumes.plan import VolumeFingerprint, make_volume_plan

HIPPOCAMPUS = SHARED_DATA / "MSD-Hippocampus"
SERIES = HIPPOCAMPUS / "dicom-series"
CT_SERIES = SHARED_DATA / "CT-sample" / "example_ct_dicom"
needs_hippocampus = pytest.mark.skipif(
    not HIPPOCAMPUS.is_dir(), reason=f"MSD-Hippocampus not found at {HIPPOCAMPUS}"
)
needs_ct_series = pytest.mark.skipif(
    not CT_SERIES.is_dir(), reason=f"the CT sample's DICOM series not found at {CT_SERIES}"
)

# A volume stored RAS (its i and j axes point right and anterior: ITK's direction diag(-1, -1,
# 1), as MSD Hippocampus is stored), 2 x 0.5 x 0.5 mm, off the origin.
AFFINE = np.array(
    [[0.5, 0, 0, 10.0], [0, 0.5, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]], dtype=float
)


def nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


# --- scores ---------------------------------------------------------------------------------


def test_surface_distances_in_mm_on_an_anisotropic_volume_match_a_hand_count() -> None:
    """A 4x4x4 cube and the same cube moved one slice (3 mm) along D. Boundaries: 56 voxels
    each. Prediction to target: the 16 of its new top face are 3 mm off, the 4 inner voxels of
    its bottom face 1 mm (in-plane, to the target's ring), the rest on the target's boundary;
    the target to the prediction is the mirror image. So HD95 3 mm, mean surface distance
    (4 + 48) * 2 / 112 mm, NSD at 1 mm (40 + 40) / 112."""
    target = np.zeros((10, 10, 10), np.uint8)
    target[2:6, 2:6, 2:6] = 1
    pred = np.zeros_like(target)
    pred[3:7, 2:6, 2:6] = 1
    row = volume_scores(pred, target, spacing=(3.0, 1.0, 1.0), num_classes=2)[1]
    assert row["dice"] == pytest.approx(0.75)  # 48 shared of 64 + 64
    assert row["iou"] == pytest.approx(48 / 80)
    assert row["hd95"] == pytest.approx(3.0)
    assert row["msd"] == pytest.approx(104 / 112)
    assert row["nsd"] == pytest.approx(80 / 112)
    assert row["volume_target_ml"] == pytest.approx(64 * 3 / 1000)
    assert row["volume_difference_ml"] == 0


def test_an_empty_prediction_scores_zero_and_its_distances_are_left_out_of_the_means() -> None:
    target = np.zeros((4, 4, 4), np.uint8)
    target[1:3, 1:3, 1:3] = 2
    rows = volume_scores(np.zeros_like(target), target, spacing=(1, 1, 1), num_classes=3)
    assert rows[1]["dice"] == 1 and rows[1]["empty_pred"] and rows[1]["empty_target"]
    assert rows[2]["dice"] == 0 and rows[2]["nsd"] == 0
    assert rows[2]["hd95"] == pytest.approx(math.sqrt(3 * 16))  # the volume's diagonal


def test_class_volumes_in_millilitres() -> None:
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[0, :2, :] = 1  # 10 voxels
    labels[2, 3, 4] = 2  # 1 voxel
    # 2 x 0.5 x 0.5 mm = 0.5 mm3 = 0.0005 mL a voxel
    assert class_volumes_ml(labels, (2.0, 0.5, 0.5), 3) == pytest.approx([0.005, 0.0005])


# --- reading and writing ---------------------------------------------------------------------


def test_a_nifti_round_trip_keeps_shape_and_affine_and_lies_on_its_image(tmp_path) -> None:
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)  # x, y, z as NIfTI stores
    image = read_volume(nifti(tmp_path / "ct.nii.gz", data))
    assert image.array.shape == (1, 4, 5, 6)  # C x D x H x W
    assert image.spacing == (2.0, 0.5, 0.5)
    # canonical LPS axes: stored RAS, so x (and y) are reversed in the array
    assert image.array[0, 0, 0, 0] == data[5, 4, 0]
    labels = (image.array[0] > 60).astype(np.uint8)
    written = nib.load(write_labels(labels, image, tmp_path / "seg.nii.gz"))
    assert written.shape == data.shape
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), (data > 60).astype(np.uint8))


def test_a_4d_decathlon_image_is_read_as_channels(tmp_path) -> None:
    data = np.stack([np.full((3, 4, 5), 1.0), np.full((3, 4, 5), 7.0)], axis=-1)
    image = read_volume(nifti(tmp_path / "brats.nii.gz", data.astype(np.float32)))
    assert image.array.shape == (2, 5, 4, 3)
    assert image.array[0].max() == 1 and image.array[1].min() == 7


def test_the_nnunet_raw_layout_is_read_with_its_channels_and_labels(tmp_path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in range(5):
        for channel in range(2):
            volume = np.full((4, 4, 4), channel * 10 + case, np.float32)
            nifti(tmp_path / "imagesTr" / f"c{case}_{channel:04d}.nii.gz", volume)
        nifti(tmp_path / "labelsTr" / f"c{case}.nii.gz", np.ones((4, 4, 4), np.uint8))
    description = {
        "channel_names": {"0": "CT", "1": "T2"},
        "labels": {"background": 0, "tumour": 1},
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    source = parse_volume_spec(f"nnunet:{tmp_path}")
    assert source.class_names == ("background", "tumour")
    assert source.channel_names == ("CT", "T2") and source.modality == "CT"
    every = [case for cases in source.cases.values() for case in cases]
    assert sorted(case.id for case in every) == [f"c{i}" for i in range(5)]
    image, label = read_case(source.cases["train"][0])
    assert image.array.shape == (2, 4, 4, 4)
    assert image.array[1, 0, 0, 0] - image.array[0, 0, 0, 0] == 10
    assert label.array.dtype == np.uint8


@needs_hippocampus
def test_the_decathlon_layout_splits_by_case_70_10_20_with_seed_0() -> None:
    source = parse_volume_spec(f"msd:{HIPPOCAMPUS}")
    assert source.class_names == ("background", "Anterior", "Posterior")
    assert source.modality == "MR"
    counts = {split: len(cases) for split, cases in source.cases.items()}
    assert counts == {"train": 182, "val": 26, "test": 52}
    ids = [case.id for cases in source.cases.values() for case in cases]
    assert len(set(ids)) == 260  # no case on two sides
    assert parse_volume_spec(f"msd:{HIPPOCAMPUS}").split_listing() == source.split_listing()


@needs_ct_series
def test_a_ct_series_is_in_hounsfield_units_spaced_by_its_positions_not_its_thickness() -> None:
    volume = read_volume(CT_SERIES)
    assert volume.modality == "CT"
    assert volume.array.shape == (1, 20, 512, 512)
    assert volume.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))  # SliceThickness says 3
    assert volume.array.min() == -1024  # air, after the rescale


# --- bad input ---------------------------------------------------------------------------------


def test_a_nifti_with_a_broken_header_is_refused_by_name(tmp_path) -> None:
    path = tmp_path / "broken.nii"
    path.write_bytes(b"\x00" * 400)
    with pytest.raises(DataError, match=r"broken\.nii: not a readable volume"):
        read_volume(path)


@pytest.mark.parametrize("name", ["short.nii", "short.nii.gz"])
def test_a_nifti_shorter_than_its_header_says_is_refused(tmp_path, name: str) -> None:
    path = nifti(tmp_path / name, np.ones((20, 20, 20), np.float32))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=rf"{name}: not a readable volume .*20x20x20 voxels"):
        read_volume(path)


def test_a_volume_over_the_voxel_limit_is_refused_from_its_header(tmp_path) -> None:
    path = nifti(tmp_path / "big.nii.gz", np.zeros((10, 10, 10), np.uint8))
    with pytest.raises(DataError, match=r"big\.nii\.gz: 10x10x10 is 1,000 voxels, over the limit"):
        read_volume(path, max_voxels=999)


def test_labels_of_another_shape_or_grid_or_not_whole_are_refused_naming_both(tmp_path) -> None:
    image = read_volume(nifti(tmp_path / "img.nii.gz", np.zeros((6, 5, 4), np.float32)))
    other_shape = nifti(tmp_path / "shape.nii.gz", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(DataError, match=r"shape\.nii\.gz: .* does not lie on its image img: size"):
        read_label_volume(other_shape, image)
    moved = AFFINE.copy()
    moved[0, 3] += 5
    shifted = nifti(tmp_path / "moved.nii.gz", np.zeros((6, 5, 4), np.uint8), moved)
    with pytest.raises(DataError, match=r"moved\.nii\.gz: .*origin"):
        read_label_volume(shifted, image)
    halves = nifti(tmp_path / "halves.nii.gz", np.full((6, 5, 4), 0.5, np.float32))
    with pytest.raises(DataError, match=r"halves\.nii\.gz: label values must be whole .*0\.5"):
        read_label_volume(halves, image)
    floats = nifti(tmp_path / "floats.nii.gz", np.full((6, 5, 4), 2.0, np.float32))
    assert read_label_volume(floats, image).array.max() == 2
    four_d = nifti(tmp_path / "fourd.nii.gz", np.zeros((6, 5, 4, 2), np.uint8))
    with pytest.raises(DataError, match=r"fourd\.nii\.gz: a label volume must have one channel"):
        read_label_volume(four_d, image)


def _series_copy(tmp_path: Path, skip: int | None = None) -> Path:
    folder = tmp_path / "series"
    folder.mkdir()
    files = sorted(SERIES.glob("Study1*/*.dcm"), key=lambda p: int(p.stem))
    for index, path in enumerate(files):
        if index != skip:
            shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"DICOM series not found at {SERIES}")
def test_a_series_with_a_missing_slice_is_refused_saying_where(tmp_path) -> None:
    folder = _series_copy(tmp_path, skip=10)
    with pytest.raises(
        DataError, match=r"series: series .* has a gap \(missing slices\?\) between"
    ):
        read_volume(folder)


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"DICOM series not found at {SERIES}")
def test_a_zip_of_a_series_reads_as_its_folder_and_a_zip_without_one_is_refused(tmp_path) -> None:
    import zipfile

    folder = next(SERIES.glob("Study1*"))
    with zipfile.ZipFile(tmp_path / "study.zip", "w") as archive:
        for path in folder.glob("*.dcm"):
            archive.write(path, f"nested/{path.name}")
    zipped, unzipped = read_volume(tmp_path / "study.zip"), read_volume(folder)
    assert zipped.name == "study" and zipped.spacing == unzipped.spacing
    np.testing.assert_array_equal(zipped.array, unzipped.array)
    assert zipped.geometry == unzipped.geometry
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as archive:
        archive.writestr("readme.txt", "no images here")
    with pytest.raises(DataError, match=r"notes\.zip: no DICOM image series"):
        read_volume(tmp_path / "notes.zip")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slice.dcm", bytes(80 * 1024**2))  # 80 MB of zeros, a few kB zipped
    with pytest.raises(DataError, match=r"bomb\.zip: 1 files, 84 MB unpacked: over the limits"):
        read_volume(tmp_path / "bomb.zip", max_voxels=1000)  # 64 MB + 4 kB allowed


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"DICOM series not found at {SERIES}")
def test_a_series_of_mixed_orientation_is_refused(tmp_path) -> None:
    folder = _series_copy(tmp_path)
    first = sorted(folder.glob("*.dcm"))[0]
    header = pydicom.dcmread(first)
    header.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    header.save_as(first)
    with pytest.raises(DataError, match=f"mixes orientations .*{first.name}: \\[0.0, 1.0"):
        read_volume(folder)


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"DICOM series not found at {SERIES}")
def test_a_folder_of_two_series_lists_them_and_reads_the_one_chosen(tmp_path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for study in ("Study1*", "Study2*"):
        for path in SERIES.glob(f"{study}/*.dcm"):
            shutil.copy(path, folder / f"{study[:6]}-{path.name}")
    with pytest.raises(DataError, match=r"2 series, never mixed: choose one .*HippoCrop"):
        read_volume(folder)
    uid = str(pydicom.dcmread(next(SERIES.glob("Study2*/*.dcm"))).SeriesInstanceUID)
    assert read_volume(folder, series=uid).shape == read_volume(next(SERIES.glob("Study2*"))).shape


# --- 3D inference, patches, plan ----------------------------------------------------------------


def test_sliding_windows_over_a_volume_blend_back_to_the_input() -> None:
    """Windows of an identity 'model' averaged with any weights give the input back exactly:
    every voxel is covered, and the weights sum to one."""
    model = zoo.create_model("unet3d", num_classes=2, in_channels=2, base_channels=2, depth=1)
    volume = torch.rand(1, 2, 13, 17, 9)
    blended = zoo.sliding_window_predict(
        model, volume, tile=(6, 8, 9), overlap=0.5, predict=lambda x: x
    )
    torch.testing.assert_close(blended, volume)


def test_a_foreground_patch_holds_foreground_and_a_small_case_is_padded() -> None:
    label = torch.zeros(30, 30, 30, dtype=torch.uint8)
    label[25:27, 2:4, 20:22] = 1
    case = Ready("c", torch.ones(1, 30, 30, 30), label, {1: torch.nonzero(label == 1)})
    sampler = PatchSampler([case], (8, 8, 8), batch=1, in_plane=(1, 2), seed=0)
    for seed in range(5):
        sampler.generator.manual_seed(seed)
        image, labels = sampler._crop(case, centre_on_foreground=True)
        assert labels.sum() > 0 and image.shape == (1, 8, 8, 8)
    small = Ready("s", torch.ones(1, 4, 4, 4), torch.ones(4, 4, 4, dtype=torch.uint8), {})
    image, labels = PatchSampler([small], (8, 8, 8), 1, (1, 2))._crop(small, False)
    assert image.sum() == 64 and image[0, 2:6, 2:6, 2:6].sum() == 64  # centred, zeros around


@pytest.mark.parametrize("axis", [0, 2])
def test_any_image_model_runs_over_a_volume_slice_by_slice(axis: int) -> None:
    model = zoo.create_model(
        "slices/unet", num_classes=2, in_channels=1, base_channels=4, axis=axis
    )
    model.eval()
    assert model.spec.spatial_dims == 3
    volume = torch.rand(2, 1, 5, 16, 32)
    with torch.no_grad():
        out = model(volume)
        for index in (0, 3):
            plane = volume.select(2 + axis, index)  # N x C x P x Q
            torch.testing.assert_close(out.select(2 + axis, index), model.net.net(plane))
    with pytest.raises(KeyError, match="unet3d' is not an image model"):
        zoo.create_model("slices/unet3d")


def _fingerprint(shape=(36, 50, 35), spacing=(1.0, 1.0, 1.0)) -> VolumeFingerprint:
    return VolumeFingerprint((spacing,) * 3, (shape,) * 3, "MR", 1, 3)


def test_the_plan_chooses_the_widest_model_that_trains_enough_steps_and_fills_its_share() -> None:
    costs = {16: 0.1, 32: 0.3, 64: 1.0}
    timer = lambda model, kwargs, patch, batch, precision: costs[kwargs["base_channels"]]  # noqa: E731
    plan = make_volume_plan(_fingerprint(), Hardware(threads=2), timer, allowance=1200)
    assert plan["model_kwargs"]["base_channels"] == 32  # 64 trains 960 steps in 960 s: too few
    assert plan["steps"] == 3200  # the share, 0.8 x 1200 s, at 0.3 s a step
    assert plan["patch"] == [40, 56, 40] and plan["target_spacing"] == [1.0, 1.0, 1.0]
    fast = make_volume_plan(
        _fingerprint(), Hardware(threads=2, gpu_memory_gb=80, gpu_bf16=True), lambda *a: 0.01
    )
    assert fast["model_kwargs"]["base_channels"] == 64 and fast["precision"] == "bf16"


def test_an_anisotropic_data_set_trains_2d_on_slices_across_its_coarse_axis() -> None:
    plan = make_volume_plan(
        _fingerprint((60, 512, 512), (5.0, 0.8, 0.8)), Hardware(threads=2), lambda *a: 0.1
    )
    assert plan["model"] == "slices/unet" and plan["patch"] == [1, 512, 512]
    assert plan["model_kwargs"]["axis"] == 0 and plan["batch"] == 2
    assert any("anisotropy is 6.2" in line for line in plan["reasons"])


def test_where_no_3d_width_trains_enough_steps_the_plan_falls_back_to_slices() -> None:
    def timer(model, kwargs, patch, batch, precision) -> float:
        return 0.05 if model.startswith("slices/") else 1.0  # 3D: 960 steps, under 2000

    plan = make_volume_plan(_fingerprint(), Hardware(threads=2), timer, allowance=1200)
    assert plan["model"] == "slices/unet" and plan["patch"] == [1, 64, 48]
    short = make_volume_plan(_fingerprint(), Hardware(threads=2), lambda *a: 1.0, allowance=60)
    assert short["model"] == "unet3d"  # neither trains enough in a minute: 3D stays, narrowest
    assert short["model_kwargs"]["base_channels"] == 16 and short["steps"] == 48
    assert "the narrowest: none trains 2000 steps" in short["reasons"][-1]
    assert plan["batch"] == 64  # 64 * 96 * 96 voxels hold more slices of 64 x 48 than that
    assert any("no 3D width trains 2000 steps" in line for line in plan["reasons"])


def test_ct_is_clipped_to_the_foreground_percentiles_and_mri_z_scored_per_volume() -> None:
    image = np.concatenate([np.full(100, -1000.0), np.linspace(0, 100, 1000)])[None]
    label = np.concatenate([np.zeros(100), np.ones(1000)])
    ct = Intensity.fit([image], [label], ["CT"]).channels[0]
    # numpy's percentiles of 1000 evenly spaced values from 0 to 100: 0.5 % and 99.5 % of the way
    assert ct.scheme == "ct" and ct.low == pytest.approx(0.5, abs=0.01)
    assert ct.high == pytest.approx(99.5, abs=0.01)
    assert Intensity((ct,)).apply(image)[0, :100].min() == pytest.approx((0.5 - ct.mean) / ct.std)
    mri = Intensity.fit([image], [label], ["MR"]).apply(image)
    assert mri.mean() == pytest.approx(0, abs=1e-5) and mri.std() == pytest.approx(1, abs=1e-4)


# --- a volume model: trained, saved, predicted over series ---------------------------------------


def _volume_model(folder: Path) -> Path:
    model = zoo.create_model("unet3d", num_classes=3, in_channels=1, base_channels=4, depth=2)
    recipe = VolumeRecipe(
        (1.0, 1.0, 1.0), (16, 16, 16), Intensity.fit([], [], ["MR"]), "MR", ("MRI",)
    )
    zoo.save_pretrained(model, folder, classes=["background", "a", "b"], volume=recipe.to_config())
    return folder


@pytest.mark.skipif(not SERIES.is_dir(), reason=f"DICOM series not found at {SERIES}")
def test_predict_over_series_writes_label_volumes_in_each_series_geometry(tmp_path) -> None:
    from trainers.predict import main

    weights = _volume_model(tmp_path / "model")
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as ended:
        main(["--weights", str(weights), "--input", str(SERIES), "--output", str(output)])
    assert ended.value.code == 0
    folders = sorted(p for p in SERIES.iterdir() if p.is_dir())
    assert len(folders) == 3
    reader = sitk.ImageSeriesReader()
    for folder in folders:
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        series = reader.Execute()
        labels = sitk.ReadImage(str(output / f"{folder.name}.nii.gz"))  # LPS, as ITK reads both
        assert labels.GetSize() == series.GetSize()
        np.testing.assert_allclose(labels.GetOrigin(), series.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(labels.GetSpacing(), series.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(labels.GetDirection(), series.GetDirection(), atol=1e-6)
    results = (output / "results.csv").read_text()
    assert results.count("\n") == 4 and "volume_a_ml" in results
    patient = str(pydicom.dcmread(next(folders[0].glob("*.dcm"))).PatientName)
    for path in output.rglob("*"):
        if path.is_file():
            assert patient.encode() not in path.read_bytes(), path


class Tiny3D(torch.nn.Module):
    """A volume plugin of two convolutions: the model contract's third spatial axis, no more."""

    def __init__(self, *, num_classes: int, in_channels: int, pretrained: bool = False) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(in_channels, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv3d(8, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_2d_model_is_refused_for_volumes_by_name(tmp_path) -> None:
    from trainers.volumes.train import _volume_model

    with pytest.raises(ValueError, match="model 'unet' takes 2D images; volumes need a volume"):
        _volume_model("unet")


def test_a_folder_of_volumes_trains_a_3d_plugin_then_predicts_in_its_geometry(
    tmp_path, monkeypatch
) -> None:
    """A volume plugin registered at run time (as a file dropped into zoo/ registers) trains
    with the plan and predicts with no other change."""
    from trainers.train import run_command

    zoo.list_models()  # the plugins found first; the registry is restored after the test
    monkeypatch.setattr(zoo._registry, "_specs", dict(zoo._registry._specs))
    zoo.register_model("tiny3d-test", summary="two 3D convolutions", spatial_dims=3)(Tiny3D)

    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for case in range(10):
        label = np.zeros((12, 12, 12), np.uint8)
        corner = rng.integers(1, 6, 3)
        label[corner[0] : corner[0] + 5, corner[1] : corner[1] + 5, corner[2] : corner[2] + 5] = 1
        image = label * 2.0 + rng.normal(0, 0.3, label.shape)
        nifti(tmp_path / "data" / "images" / f"c{case}.nii.gz", image.astype(np.float32))
        nifti(tmp_path / "data" / "labels" / f"c{case}.nii.gz", label)
    run = run_command(
        [
            *("--data", f"folder:{tmp_path / 'data'}", "--model", "tiny3d-test"),
            *("--steps", "30", "--output", str(tmp_path / "run")),
        ]
    )
    split = json.loads((run / "split.json").read_text())
    assert {split: len(ids) for split, ids in split.items()} == {"train": 7, "val": 1, "test": 2}
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["cases"] == 2 and 0 <= summary["mean_dice"] <= 1
    assert json.loads((run / "config.json").read_text())["volume"]["spatial_dims"] == 3
    from trainers.evaluate import main as evaluate_main

    evaluate_main(["--weights", str(run), "--data", f"folder:{tmp_path / 'data'}"])
    again = json.loads((run / "eval-test" / "summary.json").read_text())
    assert again["mean_dice"] == pytest.approx(summary["mean_dice"], abs=1e-6)  # the same scoring
    from trainers.hub.model_card import run_card

    card = run_card(run, "lab/volumes")
    assert "| foreground | " in card and "NSD at 1 mm" in card and "HD95 (mm)" in card
    assert "predict_volume(model, volume)" in card and "resampled to 2 x 0.5 x 0.5 mm" in card
    model = zoo.from_pretrained(run)
    image = read_volume(tmp_path / "data" / "images" / "c0.nii.gz")
    labels = predict_volume(model, image)
    assert labels.shape == image.shape and labels.dtype == np.uint8
    written = nib.load(write_labels(labels, image, tmp_path / "c0_seg.nii.gz"))
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)


def test_a_volume_given_to_the_2d_reader_is_refused_saying_where_to_open_it(tmp_path) -> None:
    from trainers.data.readers import read_decoded

    path = nifti(tmp_path / "scan.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"scan\.nii\.gz: a volume .* not a 2D image: open it"):
        read_decoded(path)


def test_the_record_counts_training_seconds_without_validation_and_keeps_the_best(
    tmp_path,
) -> None:
    import csv
    import time

    from trainers.volumes.train import Record

    saved: list[int] = []
    record = Record(tmp_path / "metrics.csv", 2, lambda: saved.append(1))

    def slow_validation() -> tuple[float, float]:
        time.sleep(0.3)
        return 0.7, 0.5

    record.losses.append(torch.tensor(0.5))
    record.interval(10, 1e-3, slow_validation, "1:00")
    record.losses.append(torch.tensor(0.4))
    record.interval(20, 1e-3, lambda: (0.6, 0.4), "0:30")  # worse: not saved
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["val_dice"] for row in rows] == ["0.70000", "0.60000"]
    assert float(rows[0]["seconds"]) < 0.2  # the 0.3 s of validation are not training time
    assert saved == [1]
