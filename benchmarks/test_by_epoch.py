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
_test_loader = {}


def _make_loader_keeping_test(domain, split, *args, **kwargs):
    loader = _make_loader(domain, split, *args, **kwargs)
    if split == "test":
        _test_loader["loader"] = loader
    return loader


def _evaluate_with_test(model, loader, accelerator, num_items, *args, **kwargs):
    result = _evaluate(model, loader, accelerator, num_items, *args, **kwargs)
    test = _evaluate(model, _test_loader["loader"], accelerator, num_items, *args, **kwargs)
    _evaluate_with_test.calls += 1
    print(f"TRACE {_evaluate_with_test.calls - 1} valid {result['metrics']['ndcg@10']:.4f} test {test['metrics']['ndcg@10']:.4f}", flush=True)
    return result


_evaluate_with_test.calls = 0

if __name__ == "__main__":
    training.make_loader, training.evaluate = _make_loader_keeping_test, _evaluate_with_test
    from finetune.cli import main

    sys.exit(main(sys.argv[1:]))
