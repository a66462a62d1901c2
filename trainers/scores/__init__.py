"""Scoring: pixel metrics, object scores, the one predict-and-score path, and their plots.

from trainers.scores import metrics
from trainers.scores.scoring import class_map, predict_probabilities
"""
