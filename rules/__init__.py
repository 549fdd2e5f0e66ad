"""Rules files that ship with Stormwatch (``default.yaml``) and their tests (``tests/``)."""
