import sys

from .cli import main

sys.exit(main(["cost-model", *sys.argv[1:]]))
