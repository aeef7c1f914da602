"""finsent's pipeline, one package per stage, data flowing down this list:

- ``ingest``   feeds → fetched, parsed, normalised, deduplicated articles (``run_ingest``)
- ``scoring``  articles → topic and sentiment scores → hourly rollups (``score_pending``)
- ``alerts``   rollups → rule evaluation → alert state → outbox → SMTP (``run_alerts``)
- ``store``    every query, by table group, and the database engine (``store.db``)

``cycle`` runs ingest → score → alerts in one process; ``maintenance`` keeps the tables; ``cli`` is the
``finsent`` command; ``demo`` is the demo and its scaffolding (nothing else imports it).
"""
