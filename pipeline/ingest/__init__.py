"""Ingestion: sources → fetch (bounded, polite, guarded) → parse → normalise → dedup → store.

The door for callers (CLI, DAGs, the cycle): run a whole run, or a batch of sources as the ingest DAG
does. Inside, modules depend one way: ``run`` → ``workers`` → ``prepare`` (``parse``, ``normalise``,
``entities``, ``dedup``) and ``run`` → ``fetch`` (``robots``, ``decode``), ``extract``, ``report`` →
``sources``.
"""

from pipeline.ingest.report import IngestReport, SourceReport
from pipeline.ingest.run import ingest_sources, run_ingest, source_batches
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
