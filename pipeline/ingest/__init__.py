"""Ingestion: sources → fetch (bounded, polite, guarded) → parse → normalise → dedup → store.

The door for callers (CLI, DAGs, the cycle): run a whole run, or a batch of sources as the ingest DAG
does. Inside, modules depend one way: ``run`` → ``prepare`` steps (``parse``, ``normalise``,
``entities``, ``dedup``, ``extract``) and ``fetch`` (``robots``, ``decode``) → ``sources``.
"""

from pipeline.ingest.run import IngestReport, SourceReport, ingest_sources, run_ingest, source_batches
from pipeline.ingest.sources import Source, SourcesError, load_sources

__all__ = [
    "IngestReport",
    "Source",
    "SourceReport",
    "SourcesError",
    "ingest_sources",
    "load_sources",
    "run_ingest",
    "source_batches",
]
