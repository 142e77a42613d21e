"""Registers the core's generic metrics (``bench.metrics``, imported when a metric is used).

The fidelity metrics compare with vanilla's output at the same seed, so they fit any base
model: a built-in plugin of the core. So is the opt-in Inception FID for real-image models.
"""

from bench.hookspecs import hookimpl
from bench.specs import MetricSpec

FIDELITY_METRICS = (
    "PSNRVsVanilla",
    "SSIMVsVanilla",
    "TokenAgreement",
    "FeatureCosine",
)  # in bench.fidelity_metrics


@hookimpl
def register_metrics(register):
    for cls in FIDELITY_METRICS:
        register(
            MetricSpec(info=f"bench.fidelity_metrics:{cls}.info", factory=f"bench.fidelity_metrics:{cls}")
        )
    register(
        MetricSpec(
            info="bench.metrics:FID_INCEPTION_INFO",
            factory="bench.metrics:fid_inception_metric",
            default=False,
            check="bench.metrics:fid_inception_unavailable",
        )
    )
