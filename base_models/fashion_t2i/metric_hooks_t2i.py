"""Registers the attribute-classifier metrics of the text-to-image default: attribute
accuracy (all four and each attribute) and FID / KID in the classifier's feature space (code:
``base_models.fashion_t2i.t2i_metrics``, imported when a metric is used). None is in the
default set: the ``fashion-t2i`` base model names the metrics it runs by default. No ``check``:
without the classifier weights the factories raise ``MetricUnavailable``, so a run skips
these metrics with the reason (as the class-conditional FID) instead of failing at start-up."""

from bench.hookspecs import hookimpl
from bench.specs import MetricSpec

_CODE = "base_models.fashion_t2i.t2i_metrics"
_METRICS = (
    ("ATTRIBUTE_ACCURACY_INFO", "_attribute_accuracy"),
    ("ATTR_CLASS_INFO", "_attr_class_accuracy"),
    ("ATTR_SIZE_INFO", "_attr_size_accuracy"),
    ("ATTR_POSITION_INFO", "_attr_position_accuracy"),
    ("ATTR_TONE_INFO", "_attr_tone_accuracy"),
    ("FID_INFO", "_fid_attributes"),
    ("KID_INFO", "_kid_attributes"),
)


@hookimpl
def register_metrics(register):
    for info, factory in _METRICS:
        register(MetricSpec(info=f"{_CODE}:{info}", factory=f"{_CODE}:{factory}", default=False))
