from tests.helpers.otlp import receiver  # noqa: F401 - the OTLP receiver fixture of this folder
