"""`python -m s2v_cli`: the `s2v` command (how `s2v local up --detach` starts its background stack)."""

from s2v_cli.main import app

app(prog_name="s2v")
