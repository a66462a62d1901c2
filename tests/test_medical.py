"""DICOM and TIFF through pydicom and tifffile: values, windows, frames, pixel sizes, and bad
files named without a patient's data. Every file is made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from trainers.data.readers import DataError, read_decoded, read_image

PATIENT = "Doe^Jane"


def dicom(path: Path, pixels: np.ndarray, **tags: object) -> Path:
    """A DICOM file of `pixels` (H x W, F x H x W, or H x W x 3) with a patient's name."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT, "12345", "CT"
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    frames = pixels.shape[0] if pixels.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_16_bit_grey_dicom_is_rescaled_and_windowed_with_its_spacing(tmp_path: Path) -> None:
    stored = np.array([[0, 50, 250], [450, 1000, 60000]], dtype=np.uint16)
    path = dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-100,
                 WindowCenter=400, WindowWidth=800, PixelSpacing=[0.5, 0.25])  # fmt: skip
    decoded = read_decoded(path)
    # 2 x stored - 100 = -100, 0, 400, 800, 1900, ...: through the window 0..800, clipped.
    expected = np.array([[0, 0, 0.5], [1, 1, 1]], dtype=np.float32)[..., None]
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.spacing == (0.5, 0.25) and decoded.unit == "mm"
    assert decoded.note == "window centre 400, width 800 (the file's)"
    assert PATIENT not in repr(decoded)


def test_a_dicom_without_a_window_uses_its_full_range(tmp_path: Path) -> None:
    stored = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    decoded = read_decoded(dicom(tmp_path / "x.dcm", stored))
    np.testing.assert_allclose(decoded.pixels[..., 0], [[0, 0.25], [0.5, 1]], atol=1e-6)
    assert (
        decoded.note == "full range 10 to 50 (the file has no window)" and decoded.spacing is None
    )


def test_colour_and_multi_frame_dicom(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        read_image(dicom(tmp_path / "rgb.dcm", rgb)), rgb.astype(np.float32) / 255
    )
    frames = np.stack([np.full((4, 5), v, np.uint16) for v in (0, 10, 20)])
    frames[:, 0, 0] = 30  # the full range of each frame: 0..30, 10..30, 20..30
    path = dicom(tmp_path / "multi.dcm", frames)
    decoded = read_decoded(path, index=1)
    assert decoded.frames == 3 and decoded.index == 1 and decoded.pixels[1, 1, 0] == 0.0
    with pytest.raises(DataError, match=r"frame 3 is out of range; the file has 3 \(0 to 2\)"):
        read_decoded(path, index=3)


def test_a_compressed_dicom_with_its_handler_present(tmp_path: Path) -> None:
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8) * 100
    path = dicom(tmp_path / "rle.dcm", stored)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    np.testing.assert_allclose(read_image(path)[..., 0], stored / 6300, atol=1e-6)


def bad(tmp_path: Path, name: str, **tags: object) -> Path:
    return dicom(tmp_path / name, np.zeros((4, 4), np.uint16), **tags)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _without_pixels(bad(d, "sr.dcm")), "without pixel data"),
        (lambda d: _jpeg_ls(bad(d, "ls.dcm")), r"JPEG-LS Lossless.*pylibjpeg-libjpeg"),
        (
            lambda d: bad(d, "deep.dcm", BitsAllocated=32),
            "32-bit DICOM pixel data is not supported",
        ),
        (lambda d: _truncated(bad(d, "cut.dcm")), "cannot decode|not a readable DICOM"),
        (lambda d: bad(d, "zero.dcm", PixelSpacing=[0, 0.5]), "PixelSpacing .* positive sizes"),
    ],
)
def test_bad_dicom_files_are_named_without_the_patient(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as caught:
        read_image(path)
    assert path.name in str(caught.value)
    assert "Doe" not in str(caught.value) and "12345" not in str(caught.value)


def _without_pixels(path: Path) -> Path:
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.Modality = "SR"
    ds.save_as(path)
    return path


def _jpeg_ls(path: Path) -> Path:
    """JPEG-LS pixel data, whose decoder (pylibjpeg-libjpeg or pyjpegls) is not installed."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 28])
    ds.save_as(path)
    return path


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-20])
    return path


def test_an_ome_tiff_stack_gives_the_chosen_plane_and_its_micrometres(tmp_path: Path) -> None:
    stack = np.stack([np.full((6, 7), 1000 * (z + 1), np.uint16) for z in range(3)])
    path = tmp_path / "stack.ome.tif"
    sizes = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25}
    tifffile.imwrite(path, stack, ome=True, metadata=sizes)
    decoded = read_decoded(path, index=2)
    assert decoded.pixels.shape == (6, 7, 1) and decoded.pixels[0, 0, 0] == np.float32(3000 / 65535)
    assert decoded.spacing == (0.25, 0.5) and decoded.unit == "µm"
    assert decoded.frames == 3 and decoded.note == "plane 2 of 3 (Z stack)"
    with pytest.raises(DataError, match=r"stack.ome.tif: plane 3 is out of range"):
        read_decoded(path, index=3)


def test_a_16_bit_colour_tiff_keeps_its_depth_and_resolution_tags_give_the_size(
    tmp_path: Path,
) -> None:
    rgb = np.zeros((4, 5, 3), np.uint16)
    rgb[..., 0] = 257  # 1/255 in 16 bits: 8 bits would read 1/255 too, 0x0101; 300 would not
    rgb[..., 1] = 300
    path = tmp_path / "deep.tif"
    tifffile.imwrite(
        path, rgb, photometric="rgb", resolution=(2.0, 4.0), resolutionunit="CENTIMETER"
    )
    decoded = read_decoded(path)
    assert decoded.pixels[0, 0, 1] == np.float32(300 / 65535)
    assert decoded.spacing == (2500.0, 5000.0) and decoded.unit == "µm"  # 1 cm / 4 and / 2


def test_a_planar_rgb_tiff_reads_as_its_contiguous_twin(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")  # fmt: skip
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb.astype(np.float32) / 255)
