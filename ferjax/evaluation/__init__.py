"""Prediction (with test-time augmentation), metrics, reports and figures."""
