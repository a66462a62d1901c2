"""The web demo's own code, below `app.py` (the page) and above `trainers` (readers, metrics)
and `zoo` (models): the page's settings, catalogue and handlers, serving the models, what the
demo draws for a prediction, the painted layers of its editor, its overlays and the task labels
of its dropdown (docs/rooms.md says which module holds what)."""
