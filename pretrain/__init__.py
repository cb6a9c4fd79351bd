"""Pretraining entry point: ``accelerate launch pretrain/run.py [--config FILE] [key=value ...]``."""
