"""``python -m eval`` (and ``accelerate launch -m eval`` / ``torchrun -m eval``): the evaluation CLI."""

from eval.cli import main

raise SystemExit(main())
