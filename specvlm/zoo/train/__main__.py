"""``python -m specvlm.zoo.train``: the training command (:mod:`specvlm.zoo.train.cli`)."""

from specvlm.zoo.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
