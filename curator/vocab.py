"""A shared label vocabulary: native labels map to one canonical, lower-case name.

"Effusion" (NIH ChestX-ray14) and "Pleural Effusion" (CheXpert) become
"pleural effusion"; the native spelling is kept beside it on every annotation.
Modalities map to a short controlled list so captions and reports group cleanly.
"""

from __future__ import annotations

import re

SYNONYMS: dict[str, str] = {
    "effusion": "pleural effusion",
    "pleural effusion": "pleural effusion",
    "infiltration": "lung opacity",
    "infiltrate": "lung opacity",
    "lung opacity": "lung opacity",
    "nodule": "lung nodule",
    "lung lesion": "lung lesion",
    "mass": "lung mass",
    "pleural thickening": "pleural thickening",
    "pleural other": "pleural abnormality",
    "enlarged cardiomediastinum": "enlarged cardiomediastinum",
    "cardiomegaly": "cardiomegaly",
    "no finding": "no finding",
    "normal": "no finding",
    "ild": "interstitial lung disease",
    "interstitial lung disease": "interstitial lung disease",
    "support devices": "support devices",
}

MODALITIES: dict[str, str] = {
    "ct": "CT",
    "mr": "MRI",
    "mri": "MRI",
    "cr": "X-ray",
    "dx": "X-ray",
    "x-ray": "X-ray",
    "xray": "X-ray",
    "us": "ultrasound",
    "ultrasound": "ultrasound",
    "pt": "PET",
    "pet": "PET",
    "op": "fundus photography",
    "fundus": "fundus photography",
    "fundus photography": "fundus photography",
    "oct": "OCT",
    "es": "endoscopy",
    "endoscopy": "endoscopy",
    "sm": "histopathology",
    "histopathology": "histopathology",
    "dermoscopy": "dermoscopy",
    "mixed": "mixed",
}


ANATOMY: dict[str, str] = {
    "abd": "abdomen",
    "abdominal": "abdomen",
    "thorax": "chest",
    "lungs": "lung",
    "whole body": "whole body",
    "head": "head",
}


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ").replace("-", " ").strip().lower())


def canonical_label(native: str) -> str:
    key = _key(native)
    return SYNONYMS.get(key, key)


def canonical_modality(native: str | None) -> str | None:
    if native is None:
        return None
    return MODALITIES.get(native.strip().lower(), native.strip())


def canonical_anatomy(native: str) -> str:
    key = _key(native)
    return ANATOMY.get(key, key)
