"""`python -m prodcat ...` runs the `prodcat` command."""

from prodcat.cli.main import main

main()
