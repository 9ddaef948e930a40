"""Small DICOM files built in code, so a test knows the exact pixels it should get back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CHARSET_FILES = Path(pydicom.__file__).parent / "data" / "charset_files"


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    patient_id: str = "PAT-SECRET-0042",
    patient_name: str = "Doe^Jane",
    **attrs,
) -> Path:
    """Write an uncompressed DICOM file; ``attrs`` are set as top-level attributes."""
    pixels = np.asarray(pixels)
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19450704"
    ds.StudyDate = "20190321"
    ds.InstitutionName = "Secret General Hospital"
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    signed = pixels.dtype.kind == "i"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def group(**attrs) -> Sequence:
    item = Dataset()
    for key, value in attrs.items():
        setattr(item, key, value)
    return Sequence([item])


def functional_group(slope: float, intercept: float, centre: float, width: float) -> Dataset:
    """One Per-Frame Functional Groups item: Pixel Value Transformation + Frame VOI LUT."""
    item = Dataset()
    item.PixelValueTransformationSequence = group(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="HU")
    item.FrameVOILUTSequence = group(WindowCenter=centre, WindowWidth=width)
    return item
