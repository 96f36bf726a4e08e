"""``python -m specvlm_eval`` (and ``accelerate launch -m specvlm_eval`` / ``torchrun -m specvlm_eval``): the
evaluation CLI. From the repository root ``python -m eval`` runs this file too; it imports the installed name,
so that the harness's modules are loaded once, as ``specvlm_eval.*``."""

from specvlm_eval.cli import main

raise SystemExit(main())
