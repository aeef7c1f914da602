"""``python -m pipeline.demo`` (what ``make demo`` runs); an unusable database or setting is one line."""

import sys

from pipeline.config import SettingsError
from pipeline.demo.run import main
from pipeline.store import db

if __name__ == "__main__":
    try:
        with db.one_line_errors():
            main()
    except (db.DatabaseUnavailable, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
