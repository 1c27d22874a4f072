"""The on-disk layouts of the registered datasets, one module per dataset family."""

from .base import Layout, PairedFolders
from .cityscapes import CityscapesLayout
from .cocostuff import CURATED_LIST, CocoStuffLayout
from .labelmefacade import LabelMeFacadeLayout
from .potsdam import PotsdamLayout

__all__ = ["CURATED_LIST", "CityscapesLayout", "CocoStuffLayout", "LabelMeFacadeLayout", "Layout", "PairedFolders", "PotsdamLayout"]
