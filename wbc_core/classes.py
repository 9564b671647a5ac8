"""The four white-cell classes, in the model's output order."""

CLASSES = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
