"""``python -m covey`` runs the same CLI as the ``covey`` script."""

from covey.cli import main

main()
