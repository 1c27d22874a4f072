"""Losses: one file per loss, maths and formula in its docstring."""
from stego_core.losses.concept import ConceptContrastiveLoss
from stego_core.losses.correlation import (
    PAIR_TYPES,
    ContrastiveCorrelationLoss,
    CorrelationLossOutput,
    correlation,
    derangement,
    feature_correlation,
    sample_points,
)

__all__ = [
    "ConceptContrastiveLoss",
    "PAIR_TYPES",
    "ContrastiveCorrelationLoss",
    "CorrelationLossOutput",
    "correlation",
    "derangement",
    "feature_correlation",
    "sample_points",
]
