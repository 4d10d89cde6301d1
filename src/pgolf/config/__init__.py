"""Run configuration: one schema per concern (``model``, ``data``, ``train``, ``optim``, ``eval``,
``quant``, ``pack``) composed into ``RunConfig``. ``config.overrides`` (typed dotted flags, --help)
is tooling and is not imported here, so counted code never carries it."""

from pgolf.config.data import DataConfig
from pgolf.config.eval import EvalConfig
from pgolf.config.model import ModelConfig
from pgolf.config.optim import OptimConfig
from pgolf.config.pack import PackConfig
from pgolf.config.quant import QuantConfig
from pgolf.config.run import RunConfig, all_fields, config_from_dict, format_config
from pgolf.config.train import TrainConfig

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "PackConfig",
    "QuantConfig",
    "RunConfig",
    "TrainConfig",
    "all_fields",
    "config_from_dict",
    "format_config",
]
