"""Evaluation metrics: likelihoods in the papers' units, importance-weighted bounds, FID and IS.

Sample-quality metrics import torchmetrics lazily (inside the functions), so importing this
package stays cheap.
"""

from survae.metrics.likelihood import (
    DATA_KINDS,
    LikelihoodMetric,
    bits_per_dim,
    importance_weighted_log_prob,
    metric_for,
    nats_per_dim,
    negative_log_likelihood,
    per_point_log_likelihood,
)
from survae.metrics.sample_quality import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    INCEPTION_WEIGHTS_FLAG,
    INCEPTION_WEIGHTS_URL,
    SMALL_FEATURES_FLAG,
    ImageFeatureExtractor,
    InceptionFeatureExtractor,
    SmallFeatureExtractor,
    compute_fid,
    compute_inception_score,
    inception_feature_extractor,
    inception_weights_candidates,
    resolve_inception_weights,
)

__all__ = [
    "DATA_KINDS",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "INCEPTION_WEIGHTS_FLAG",
    "INCEPTION_WEIGHTS_URL",
    "SMALL_FEATURES_FLAG",
    "ImageFeatureExtractor",
    "InceptionFeatureExtractor",
    "LikelihoodMetric",
    "SmallFeatureExtractor",
    "bits_per_dim",
    "compute_fid",
    "compute_inception_score",
    "importance_weighted_log_prob",
    "inception_feature_extractor",
    "inception_weights_candidates",
    "metric_for",
    "nats_per_dim",
    "negative_log_likelihood",
    "per_point_log_likelihood",
    "resolve_inception_weights",
]
