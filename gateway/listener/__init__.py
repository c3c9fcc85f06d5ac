"""Listener actors: the accept loop, connection timers, drain, live reconfiguration."""
