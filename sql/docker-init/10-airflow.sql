-- Run once by the postgres image on an empty data volume (docker-compose.yml): Airflow keeps its
-- metadata in its own database beside finsent's.
CREATE DATABASE airflow OWNER finsent;
