"""triagent: Linux host triage agent and in-VM evidence collector."""

__version__ = "0.1.0"
