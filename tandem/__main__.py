"""`python -m tandem`: the console script without the installed entry point."""

from tandem.entry import main

main()
