"""Thin routers: validate the request, make one store call, shape the answer with ``wire``."""
