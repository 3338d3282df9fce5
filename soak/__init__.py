"""The soak: many jobs through ``covey supervise`` under kills, an engine restart, a cut event
stream and cancels, then an audit of the store against the jobs' own side effects.

``nox -s soak`` (or ``python -m soak --help``); see :mod:`soak.driver`.
"""
