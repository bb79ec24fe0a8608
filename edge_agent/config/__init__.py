"""YAML to frozen settings: the source with lines, one module a section, commands' config.apply."""
