"""Dataset contracts: pandera models for raw data, great-expectations suites for features."""
