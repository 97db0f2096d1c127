"""Quieting TensorFlow's log notes that vicourse expects (private).

Two kinds of TensorFlow log lines are harmless here and would spam every notebook:

- ``tf.vectorized_map`` noting that it runs the stateless sampler in a while_loop (there is
  no vectorized converter for per-sample seeds; :func:`vicourse.elbo_gradient` expects it);
- "N out of the last N calls to <function _vi_chunk ...> triggered tf.function retracing"
  for vicourse's own compiled functions, which trace once per new shape by design.

These are dropped permanently, and only for vicourse's functions. Anything else TensorFlow
logs is left alone; :func:`quiet` drops further messages only inside a ``with`` block.
"""

from __future__ import annotations

import contextlib
import logging

import tensorflow as tf

__all__ = ["quiet"]

_OWN_FUNCTIONS = (
    "_per_sample_gradients",
    "_per_sample_score",
    "_vi_chunk",
    "_vi_step",
    "_reverse_kl_chunk",
    "_cavi_chunk",
    "_nuts",
    "_array_chunk",
    "_dataset_chunk",
    "_svi_step",
    "_final_pass",
)


class _ExpectedNotes(logging.Filter):
    def filter(self, record):
        message = str(record.getMessage())
        if message.startswith("Using a while_loop for converting"):
            return False
        if "triggered tf.function retracing" in message:
            return not any(f"function {name}" in message for name in _OWN_FUNCTIONS)
        return True


class _Prefixes(logging.Filter):
    def __init__(self, prefixes):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record):
        return not str(record.getMessage()).startswith(self.prefixes)


_FILTER = _ExpectedNotes()
if _FILTER not in tf.get_logger().filters:
    tf.get_logger().addFilter(_FILTER)


@contextlib.contextmanager
def quiet(*prefixes: str):
    """Drop TensorFlow log messages starting with any of ``prefixes`` inside the block."""
    extra = _Prefixes(prefixes)
    logger = tf.get_logger()
    logger.addFilter(extra)
    try:
        yield
    finally:
        logger.removeFilter(extra)
