-- Runs once, when the postgres-data volume is first initialised (the entrypoint's
-- /docker-entrypoint-initdb.d): Prefect uses the POSTGRES_DB database ("prefect"), MLflow this one.
-- An existing volume does not rerun it; create the database by hand then:
--   docker compose -f docker/compose.yaml exec postgres createdb -U stego mlflow
CREATE DATABASE mlflow;
