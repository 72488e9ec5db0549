"""glossy's Hydra configuration: one YAML per command and per config-group option, each extending the
typed schema of glossy_cli/config.py, which importing this package registers in Hydra's ConfigStore."""

from glossy_cli.config import register as _register

_register()
