"""Shared test settings: a non-interactive matplotlib backend and quiet TensorFlow logs."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download: load_mnist falls back to the digits at once. The tests of the
# fallback itself set or clear this variable explicitly.
os.environ.setdefault("VICOURSE_OFFLINE", "1")
