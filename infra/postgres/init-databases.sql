-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d), as POSTGRES_USER.
-- MLflow's database is POSTGRES_DB (mlflow); the gateway's prediction log and the Prefect server get their own.
CREATE DATABASE predictions;
CREATE DATABASE prefect;
