"""``python -m sietch.server``: serve with settings from the environment only."""

from sietch.config import Settings
from sietch.server.run import serve

if __name__ == "__main__":
    serve(Settings())
