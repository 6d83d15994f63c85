"""`python -m cnndsl`: the command line."""
from .cli import main

main(prog_name="cnndsl")
