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


# -- Chinese names and normal states (issue 12) ---------------------------------------------
# Simplified Chinese names of canonical findings, anatomy and modality values, in the register
# of Chinese radiology reports (全国科学技术名词审定委员会 terms where one exists). The offline
# caption generator translates every label through this table, and a label missing here is a
# build warning naming it, never an English word inside a Chinese caption. The LLM prompt gets
# the name as a hint, and caption validation accepts it.
ZH_NAMES: dict[str, str] = {
    # chest radiography (CheXpert, MIMIC-CXR, NIH ChestX-ray14, VinDr-CXR)
    "pleural effusion": "胸腔积液",
    "cardiomegaly": "心脏增大",
    "lung opacity": "肺部阴影",
    "lung lesion": "肺部病变",
    "lung nodule": "肺结节",
    "lung mass": "肺部肿块",
    "lung nodule or mass": "肺结节或肿块",
    "pulmonary edema": "肺水肿",
    "edema": "水肿",
    "consolidation": "肺实变",
    "pneumonia": "肺炎",
    "atelectasis": "肺不张",
    "pneumothorax": "气胸",
    "pleural abnormality": "胸膜异常",
    "pleural thickening": "胸膜增厚",
    "fracture": "骨折",
    "support devices": "支持装置",
    "enlarged cardiomediastinum": "心纵隔增宽",
    "emphysema": "肺气肿",
    "pulmonary fibrosis": "肺纤维化",
    "hiatal hernia": "食管裂孔疝",
    "interstitial lung disease": "间质性肺病",
    "aortic enlargement": "主动脉增宽",
    "calcification": "钙化",
    # normal states
    "no finding": "未见明显异常",
    "no diabetic retinopathy": "未见糖尿病视网膜病变",
    # fundus
    "diabetic retinopathy": "糖尿病视网膜病变",
    "mild non-proliferative diabetic retinopathy": "轻度非增殖性糖尿病视网膜病变",
    "moderate non-proliferative diabetic retinopathy": "中度非增殖性糖尿病视网膜病变",
    "severe non-proliferative diabetic retinopathy": "重度非增殖性糖尿病视网膜病变",
    "proliferative diabetic retinopathy": "增殖性糖尿病视网膜病变",
    "age-related macular degeneration": "年龄相关性黄斑变性",
    "glaucoma": "青光眼",
    "glaucoma suspect": "可疑青光眼",
    "cataract": "白内障",
    "pathological myopia": "病理性近视",
    "hypertensive retinopathy": "高血压性视网膜病变",
    "diabetic macular edema": "糖尿病性黄斑水肿",
    # cross-sectional structures and tumours (Medical Segmentation Decathlon and kin)
    "tumour": "肿瘤",
    "liver tumour": "肝脏肿瘤",
    "pancreatic tumour": "胰腺肿瘤",
    "kidney tumour": "肾脏肿瘤",
    "brain tumour": "脑肿瘤",
    "necrotic tumour core": "肿瘤坏死核心",
    "non-enhancing tumour": "非强化肿瘤",
    "enhancing tumour": "强化肿瘤",
    "peritumoral edema": "瘤周水肿",
    "cancer": "恶性肿瘤",
    "mass": "肿块",
    "vessel": "血管",
    "hepatic vessel": "肝脏血管",
    "left atrium": "左心房",
    "prostate peripheral zone": "前列腺外周带",
    "prostate transition zone": "前列腺移行带",
    "hippocampus anterior": "海马前部",
    "hippocampus posterior": "海马后部",
    # dermoscopy (HAM10000 / ISIC)
    "actinic keratosis or intraepithelial carcinoma": "光化性角化病或上皮内癌",
    "basal cell carcinoma": "基底细胞癌",
    "benign keratosis-like lesion": "良性角化样病变",
    "dermatofibroma": "皮肤纤维瘤",
    "melanoma": "黑色素瘤",
    "melanocytic nevus": "黑色素细胞痣",
    "vascular lesion": "血管性病变",
    # musculoskeletal, abdomen, breast
    "acl pathology": "前交叉韧带病变",
    "meniscal tear": "半月板撕裂",
    "abnormal": "异常",
    "gallstone": "胆囊结石",
    "benign": "良性病变",
    "malignant": "恶性病变",
    "breast benign": "乳腺良性病变",
    "breast malignant": "乳腺恶性病变",
    # anatomy
    "liver": "肝脏",
    "kidney": "肾脏",
    "spleen": "脾脏",
    "pancreas": "胰腺",
    "prostate": "前列腺",
    "heart": "心脏",
    "hippocampus": "海马",
    "chest": "胸部",
    "abdomen": "腹部",
    "brain": "脑部",
    "head": "头部",
    "knee": "膝关节",
    "pelvis": "盆腔",
    "spine": "脊柱",
    "lung": "肺部",
    "eye": "眼部",
    "breast": "乳腺",
    "skin": "皮肤",
    "musculoskeletal": "肌肉骨骼",
    "whole body": "全身",
    "mixed": "多个部位",
    "unspecified": "相应部位",
}

# Labels that state a normal study: captions word them as normal examinations ("normal
# chest radiograph", "胸部X线片未见明显异常"), never as a finding ("evidence of no finding").
NORMAL_STATES: frozenset[str] = frozenset(
    {"no finding", "normal", "no diabetic retinopathy", "healthy", "negative", "no abnormality"}
)

# Label values that name an organ or structure a mask outlines (segmentation sets), not a
# finding: captions say the structure is depicted, not "shows liver".
STRUCTURES: frozenset[str] = frozenset(
    {
        "liver",
        "kidney",
        "spleen",
        "pancreas",
        "prostate",
        "heart",
        "lung",
        "hippocampus",
        "left atrium",
        "vessel",
        "hepatic vessel",
        "prostate peripheral zone",
        "prostate transition zone",
        "hippocampus anterior",
        "hippocampus posterior",
    }
)
