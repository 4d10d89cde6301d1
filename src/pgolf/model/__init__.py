"""The model: topology (``gpt``), layers, input mixers (``inputs``) and parameter roles (``params``)."""
