"""One module per `triagent` subcommand that has no home of its own: its parser (``add_arguments``) and
its handler (``run``). agent/cli.py names them in its table and imports one only when that command runs,
so that `collect` on a suspect host never loads the responder's code (or its dependencies) just to
build an argument parser. Responder commands keep their parser beside their code (agent/responder/*,
agent/readiness.py)."""

# Exit codes of every command (agent/cli.py's docstring says what each means). Never 194, 168 or 169:
# AWS SSM reads those as reboot/step control.
EXIT_COMPLETE, EXIT_PARTIAL, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3
