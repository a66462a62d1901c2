"""Publishing to the Hugging Face Hub: a run's files and model card, and the Gradio Space.

from trainers.hub.push import push_run, push_space
"""
