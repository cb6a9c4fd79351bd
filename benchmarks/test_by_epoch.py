"""Diagnostic: run ``finetune`` and also score the *test* split after every epoch.

The test scores are only printed (lines ``TRACE <epoch> valid <N@10> test <N@10>``); selection and
early stopping still use valid alone, so the run itself is unchanged. Use it to tell a valid->test
gap that is there at every epoch (a property of the model) from one made by picking a lucky
epoch on a noisy valid curve.

    python benchmarks/test_by_epoch.py --domain Scientific --model bert4rec --output OUT [key=value ...]
"""

import sys

import mmseqrec.training as training

_make_loader, _evaluate = training.make_loader, training.evaluate
_train_epoch = training.Trainer._train_epoch
# The epoch just trained (None outside the loop: the final valid and test scoring of the best
# weights is not traced).
_state = {"test_loader": None, "epochs_trained": 0, "epoch": None}


def _make_loader_keeping_test(domain, split, *args, **kwargs):
    loader = _make_loader(domain, split, *args, **kwargs)
    if split == "test":
        _state["test_loader"] = loader
    return loader


def _train_epoch_counted(self, *args, **kwargs):
    loss = _train_epoch(self, *args, **kwargs)
    _state["epoch"] = _state["epochs_trained"]
    _state["epochs_trained"] += 1
    return loss


def _evaluate_with_test(model, loader, accelerator, num_items, *args, **kwargs):
    """Evaluate as asked; right after a training epoch, also score test and print both."""
    result = _evaluate(model, loader, accelerator, num_items, *args, **kwargs)
    if _state["epoch"] is not None:
        test = _evaluate(model, _state["test_loader"], accelerator, num_items, *args, **kwargs)
        print(f"TRACE {_state['epoch']} valid {result['metrics']['ndcg@10']:.4f} test {test['metrics']['ndcg@10']:.4f}", flush=True)
        _state["epoch"] = None
    return result


if __name__ == "__main__":
    training.make_loader, training.evaluate = _make_loader_keeping_test, _evaluate_with_test
    training.Trainer._train_epoch = _train_epoch_counted
    from finetune.cli import main

    sys.exit(main(sys.argv[1:]))
