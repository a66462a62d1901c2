"""Training: the settings and their rules, the plan (its rules and its timing on this machine),
the loop of optimizer steps, the time budget, checkpoints and losses.

from trainers.fit.settings import TrainConfig
from trainers.fit.loop import train
"""
