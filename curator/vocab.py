"""A shared label vocabulary: native labels map to one canonical, lower-case name.

Synonyms are grouped per (modality, anatomy) domain, because the same word can
mean different findings in different images ("mass" on a chest radiograph is a
lung mass; on a mammogram it is a breast mass). A label is looked up in its
image's domain first, then in the general table; an unmapped label is kept in a
normalised form (lower case, single spaces) and the native spelling always stays
beside it on the annotation. "Effusion" (NIH ChestX-ray14) and "Pleural Effusion"
(CheXpert, MIMIC-CXR) become "pleural effusion".

Modalities and anatomy map to short controlled lists so captions group cleanly.
"""

from __future__ import annotations

import re

VOCABULARY_VERSION = "curator-v2"

# Chest radiography: CheXpert / MIMIC-CXR (14 CheXpert labeler classes), NIH ChestX-ray14,
# Open-i MeSH major terms, PadChest / VinDr-CXR spellings.
CHEST_XRAY: dict[str, str] = {
    "effusion": "pleural effusion",
    "pleural effusion": "pleural effusion",
    "infiltration": "lung opacity",
    "infiltrate": "lung opacity",
    "pulmonary opacity": "lung opacity",
    "opacity": "lung opacity",
    "lung opacity": "lung opacity",
    "nodule": "lung nodule",
    "pulmonary nodule": "lung nodule",
    "lung nodule": "lung nodule",
    "nodule/mass": "lung nodule or mass",
    "lung lesion": "lung lesion",
    "mass": "lung mass",
    "pleural thickening": "pleural thickening",
    "pleural other": "pleural abnormality",
    "enlarged cardiomediastinum": "enlarged cardiomediastinum",
    "cardiomegaly": "cardiomegaly",
    "heart enlargement": "cardiomegaly",
    "atelectasis": "atelectasis",
    "pulmonary atelectasis": "atelectasis",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax",
    "edema": "pulmonary edema",
    "pulmonary edema": "pulmonary edema",
    "emphysema": "emphysema",
    "pulmonary emphysema": "emphysema",
    "fibrosis": "pulmonary fibrosis",
    "pulmonary fibrosis": "pulmonary fibrosis",
    "hernia": "hiatal hernia",
    "hernia hiatal": "hiatal hernia",
    "hiatal hernia": "hiatal hernia",
    "fracture": "fracture",
    "fractures bone": "fracture",
    "support devices": "support devices",
    "ild": "interstitial lung disease",
    "interstitial lung disease": "interstitial lung disease",
    "aortic enlargement": "aortic enlargement",
    "calcinosis": "calcification",
    "calcification": "calcification",
}

FUNDUS: dict[str, str] = {
    "dr": "diabetic retinopathy",
    "diabetic retinopathy": "diabetic retinopathy",
    "no dr": "no diabetic retinopathy",
    "no diabetic retinopathy": "no diabetic retinopathy",
    "mild npdr": "mild non-proliferative diabetic retinopathy",
    "mild": "mild non-proliferative diabetic retinopathy",
    "moderate npdr": "moderate non-proliferative diabetic retinopathy",
    "moderate": "moderate non-proliferative diabetic retinopathy",
    "severe npdr": "severe non-proliferative diabetic retinopathy",
    "severe": "severe non-proliferative diabetic retinopathy",
    "pdr": "proliferative diabetic retinopathy",
    "proliferative dr": "proliferative diabetic retinopathy",
    "proliferative": "proliferative diabetic retinopathy",
    "amd": "age-related macular degeneration",
    "age related macular degeneration": "age-related macular degeneration",
    "glaucoma": "glaucoma",
    "glaucoma suspect": "glaucoma suspect",
    "cataract": "cataract",
    "myopia": "pathological myopia",
    "pathological myopia": "pathological myopia",
    "hypertension": "hypertensive retinopathy",
    "hypertensive retinopathy": "hypertensive retinopathy",
    "dme": "diabetic macular edema",
    "diabetic macular edema": "diabetic macular edema",
    "normal": "no finding",
    "healthy": "no finding",
}

# Segmentation masks (Medical Segmentation Decathlon and kin): structures, not findings.
CROSS_SECTIONAL: dict[str, str] = {
    "tumor": "tumour",
    "tumour": "tumour",
    "liver tumor": "liver tumour",
    "pancreas tumor": "pancreatic tumour",
    "kidney tumor": "kidney tumour",
    "necrotic tumor core": "necrotic tumour core",
    "non enhancing tumor": "non-enhancing tumour",
    "enhancing tumour": "enhancing tumour",
    "enhancing tumor": "enhancing tumour",
    "edema": "peritumoral edema",
    "left atrium": "left atrium",
    "pz": "prostate peripheral zone",
    "tz": "prostate transition zone",
    "anterior": "hippocampus anterior",
    "posterior": "hippocampus posterior",
    "hepatic vessel": "hepatic vessel",
    "vessel": "vessel",
    "nodule": "lung nodule",
    "mass": "mass",
}

# HAM10000 / ISIC diagnostic abbreviations.
DERMOSCOPY: dict[str, str] = {
    "akiec": "actinic keratosis or intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}

GENERAL: dict[str, str] = {
    "no finding": "no finding",
    "no findings": "no finding",
    "normal": "no finding",
    "benign": "benign",
    "malignant": "malignant",
}

# (modality, anatomy) -> synonym table; None matches any value.
DOMAINS: list[tuple[str | None, str | None, dict[str, str]]] = [
    ("X-ray", "chest", CHEST_XRAY),
    ("fundus photography", None, FUNDUS),
    ("fundus photography", "eye", FUNDUS),
    ("dermoscopy", None, DERMOSCOPY),
    ("CT", None, CROSS_SECTIONAL),
    ("MRI", None, CROSS_SECTIONAL),
]

# Kept for callers that look up without a domain: chest X-ray is the largest share of every corpus.
SYNONYMS: dict[str, str] = {**CHEST_XRAY, **GENERAL}

MODALITIES: dict[str, str] = {
    "ct": "CT",
    "mr": "MRI",
    "mri": "MRI",
    "flair": "MRI",
    "t1": "MRI",
    "t1w": "MRI",
    "t1gd": "MRI",
    "t2": "MRI",
    "t2w": "MRI",
    "adc": "MRI",
    "dwi": "MRI",
    "cr": "X-ray",
    "dx": "X-ray",
    "rg": "X-ray",
    "x-ray": "X-ray",
    "xray": "X-ray",
    "radiograph": "X-ray",
    "mg": "mammography",
    "mammography": "mammography",
    "us": "ultrasound",
    "ultrasound": "ultrasound",
    "pt": "PET",
    "pet": "PET",
    "nm": "nuclear medicine",
    "xa": "angiography",
    "op": "fundus photography",
    "fundus": "fundus photography",
    "fundus photography": "fundus photography",
    "cfp": "fundus photography",
    "oct": "OCT",
    "opt": "OCT",
    "ffa": "fluorescein angiography",
    "es": "endoscopy",
    "endoscopy": "endoscopy",
    "sm": "histopathology",
    "histopathology": "histopathology",
    "pathology": "histopathology",
    "dermoscopy": "dermoscopy",
    "mixed": "mixed",
}

ANATOMY: dict[str, str] = {
    "abd": "abdomen",
    "abdominal": "abdomen",
    "thorax": "chest",
    "cxr": "chest",
    "lungs": "lung",
    "whole body": "whole body",
    "head": "head",
    "brain": "brain",
    "retina": "eye",
    "fundus": "eye",
    "msk": "musculoskeletal",
    "spine": "spine",
}


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ").replace("-", " ").strip().lower())


def canonical_label(native: str, modality: str | None = None, anatomy: str | None = None) -> str:
    """The shared name of a native label, looked up in its (modality, anatomy) domain first."""
    key = _key(native)
    for dom_modality, dom_anatomy, table in DOMAINS:
        if (dom_modality is None or dom_modality == modality) and (dom_anatomy is None or dom_anatomy == anatomy):
            if key in table:
                return table[key]
    if modality is None and anatomy is None and key in SYNONYMS:
        return SYNONYMS[key]
    return GENERAL.get(key, key)


def canonical_modality(native: str | None) -> str | None:
    if native is None:
        return None
    return MODALITIES.get(native.strip().lower(), native.strip())


def canonical_anatomy(native: str) -> str:
    key = _key(native)
    return ANATOMY.get(key, key)
