"""``python -m focal_al`` runs the ``focal-al`` command line."""
from focal_al.cli import main

main()
