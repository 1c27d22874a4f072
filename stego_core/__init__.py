"""stego_core: STEGO (Hamilton et al., ICLR 2022) as a plain library, free of Prefect and MLflow.

Modules, in pipeline order: :mod:`~stego_core.data` (datasets, label maps, five-crop),
:mod:`~stego_core.backbones` (frozen feature extractors by name), :mod:`~stego_core.features`
(cached fp16 features), :mod:`~stego_core.knn`, :mod:`~stego_core.losses`, :mod:`~stego_core.head`,
:mod:`~stego_core.calibration` (label-free shifts), :mod:`~stego_core.training`,
:mod:`~stego_core.probes`, :mod:`~stego_core.kmeans`, :mod:`~stego_core.reduction` (PCA and random-projection
baselines), :mod:`~stego_core.predict`,
:mod:`~stego_core.crf`, :mod:`~stego_core.metrics`; :mod:`~stego_core.stages` composes them into
folder-to-folder stage functions, reading the big tables through :mod:`~stego_core.access` within the
budgets of :mod:`~stego_core.budget`; :mod:`~stego_core.config` / :mod:`~stego_core.presets` hold the
typed configuration. Submodules are imported on use, so ``import stego_core`` stays cheap (the CRF's
spawned worker processes import it).
"""

__version__ = "0.1.0"
