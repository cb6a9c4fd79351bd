"""The ``finetune`` console command: train and evaluate models on one target domain."""
