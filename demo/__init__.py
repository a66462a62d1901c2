"""The web demo's own code, below `app.py` (the page) and above `trainers` (readers, metrics)
and `zoo` (models): serving the models, what the demo draws for a prediction, the painted
layers of its editor, its overlays and the task labels of its dropdown."""
