"""SynthCXR reports and the labeler agree: the clinical metrics on SynthCXR rest on it."""

import numpy as np

from leadrrg.constants import OBSERVATIONS
from leadrrg.data.synth.generate import SynthConfig, sample_findings, write_report
from leadrrg.labeler import label_reports


def test_labeler_reads_synth_reports_as_their_ground_truth():
    rng = np.random.default_rng(0)
    config = SynthConfig()
    findings = [sample_findings(rng, config, independent=bool(i % 2)) for i in range(600)]
    truth = np.stack([f.labels() for f in findings])
    labels = label_reports([write_report(f, rng, config) for f in findings])
    mentioned_positive = (labels == 1) | (labels == -1)  # hedged sentences read as uncertain
    for column, name in enumerate(OBSERVATIONS):
        positives = truth[:, column] == 1
        if positives.sum() < 5:
            continue
        recall = mentioned_positive[positives, column].mean()
        false_positive = mentioned_positive[~positives, column].mean()
        assert recall >= 0.9, f"{name}: labeler finds {recall:.2f} of the synthetic positives"
        assert false_positive <= 0.02, f"{name}: labeler reads {false_positive:.3f} of negatives as positive"
