"""Shared test settings: a non-interactive matplotlib backend and quiet TensorFlow logs."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
