"""The serving side inside every model archive: the artifact contract (``gp_artifact``), the
formats' loaders (``gp_formats``), the wire codecs (``codecs``) and the TorchServe handler
(``gp_handler``).

Imports torch, numpy and orjson only (never ``gp_serve.export``, BoTorch or GPyTorch): the
``.mar`` ships this package as ``gp_serve/handler/`` beside ``gp_serve/__init__.py``.
"""
