"""``python -m vidpipe`` is the ``vidpipe`` command."""

from vidpipe.cli import main

main()
