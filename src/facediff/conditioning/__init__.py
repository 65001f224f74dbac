"""Conditions: the typed ``Condition``, the condition kinds (protocol ``kinds.py``, ``registry.py``) and the
``Conditioner``."""
