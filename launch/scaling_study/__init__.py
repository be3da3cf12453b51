"""Scaling studies of `switchyard bench`: the study file, the launchers, the results, the cost-model projection."""
