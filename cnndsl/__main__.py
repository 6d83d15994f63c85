"""`python -m cnndsl`: the command line."""
from .cli.main import main

main(prog_name="cnndsl")
