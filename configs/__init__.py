"""The model configs, installed as ``streamrec.configs`` (see pyproject.toml); edit the YAML files here."""
