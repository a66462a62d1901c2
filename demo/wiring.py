"""How the page's handlers answer: by name, turned into Gradio's {component: value} here, so
that no handler's meaning is a position in an outputs list elsewhere."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

PRIVATE = {"api_visibility": "private"}  # the page's own events: no API endpoint


def named(handler: Callable[..., Any], components: dict[str, gr.Component]) -> Callable:
    """`handler`, answering by name (a dict, or a NamedTuple), as Gradio's {component: value}:
    a component it does not name is left as it is."""

    @functools.wraps(handler)  # Gradio reads the handler's signature (gr.Progress, gr.Request)
    def by_component(*args: Any, **kwargs: Any) -> dict[gr.Component, Any]:
        answer = handler(*args, **kwargs)
        answer = answer._asdict() if hasattr(answer, "_asdict") else answer
        return {components[name]: value for name, value in answer.items()}

    return by_component
