"""finsent's ETL library: fetch → parse → normalise → dedup → store → score → roll up → alert."""
