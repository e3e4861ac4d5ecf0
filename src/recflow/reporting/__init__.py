"""Figures of the reports (matplotlib, headless): ROC, calibration, learning curves."""
