"""Registers the Fashion-MNIST metrics: FID / KID / class accuracy / IS with the shipped
classifier (code: ``base_models.fashion.metrics``, imported when a metric is used)."""

from bench.hookspecs import hookimpl
from bench.specs import MetricSpec

_CODE = "base_models.fashion.metrics"


@hookimpl
def register_metrics(register):
    register(MetricSpec(info=f"{_CODE}:FID_INFO", factory=f"{_CODE}:_fid"))
    register(MetricSpec(info=f"{_CODE}:KID_INFO", factory=f"{_CODE}:_kid"))
    register(MetricSpec(info=f"{_CODE}:CLASS_ACCURACY_INFO", factory=f"{_CODE}:_class_accuracy"))
    register(MetricSpec(info=f"{_CODE}:INCEPTION_SCORE_INFO", factory=f"{_CODE}:_inception_score"))
