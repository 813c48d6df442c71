"""`python -m synthetic`: the same as the `publiek-synth` command."""

from synthetic.cli import main

raise SystemExit(main())
