"""Accuracy as an `evaluate` metric module kept in the repository, so it loads offline.

Exact over all examples: the fraction of predictions equal to their references (not a mean of
batch means, a known bug of the DASH reference code).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the fraction of predictions that equal their references, over all examples."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): ground-truth labels.
Returns:
    accuracy (float): in [0, 1]; 0.0 for no examples.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if references.size == 0:
            return {"accuracy": 0.0}
        return {"accuracy": float((predictions == references).mean())}
