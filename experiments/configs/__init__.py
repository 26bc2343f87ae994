"""Experiment configs: ``get_config(arg)`` of each file returns a ConfigDict.

``default.py`` holds every field (with the digit-scenes quick values); the
other files import it and override a few fields. ``get_config("smoke")``
(``--config path.py:smoke``) shrinks any of them to a two-step run for tests.
"""
