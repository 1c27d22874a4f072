"""Datasets, label mappings, image/label loading and five-crop for STEGO.

Registered datasets live in `DATASETS` (see `list_datasets`); any folder of images with optional
label PNGs works through `list_samples`. Images become tensors through `SegmentationDataset`.
"""

from .cocostuff import COARSE_NAMES as COCOSTUFF27_CLASSES
from .cocostuff import FINE_CLASSES as COCOSTUFF_FINE_CLASSES
from .cocostuff import FINE_TO_COARSE as COCOSTUFF_FINE_TO_COARSE
from .dataset import SegmentationDataset
from .errors import DataError
from .dataset import CropArrays
from .five_crop import CROP_FILES, five_crop_boxes, write_crops
from .io import (
    check_image,
    check_label,
    check_label_ids,
    label_value_counts,
    load_image,
    load_label,
    load_resized_image,
    read_id_map,
)
from .layouts import Layout
from .label_maps import IGNORE, LABEL_MAPS, apply_label_map
from .registry import (
    DATA_ROOT_ENV,
    DATASETS,
    DatasetSpec,
    dataset_samples,
    dataset_subset,
    get_dataset,
    list_datasets,
    resolve_data_root,
)
from .samples import IMAGE_EXTENSIONS, Sample, exclude_samples, list_samples
from .transforms import (
    image_to_tensor,
    resize_center_crop_geometry,
    resize_center_crop_image,
    resize_center_crop_label,
)

__all__ = [
    "CROP_FILES", "COCOSTUFF27_CLASSES", "CropArrays", "COCOSTUFF_FINE_CLASSES", "COCOSTUFF_FINE_TO_COARSE", "DATASETS",
    "DATA_ROOT_ENV", "DataError", "DatasetSpec", "IGNORE", "IMAGE_EXTENSIONS", "LABEL_MAPS",
    "SegmentationDataset", "Sample", "apply_label_map", "check_image", "check_label",
    "check_label_ids", "dataset_samples", "dataset_subset", "label_value_counts", "Layout", "exclude_samples", "five_crop_boxes", "get_dataset", "image_to_tensor", "list_datasets", "list_samples",
    "load_image", "load_label", "load_resized_image", "read_id_map", "resize_center_crop_geometry",
    "resize_center_crop_image", "resize_center_crop_label", "resolve_data_root", "write_crops",
]
