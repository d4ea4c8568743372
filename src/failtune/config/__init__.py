"""The option catalogue: every option of every step declared once, and the machinery that
turns the declarations into flags, run-config keys, checks and manifest records."""
