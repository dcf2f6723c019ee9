"""The qwen-tts reference oracle: `setup_env.sh` builds its venv, `oracle.py` is the worker.

The client and the fixtures live in `tests/helpers/oracle_client.py` and `tests/conftest.py`.
"""
