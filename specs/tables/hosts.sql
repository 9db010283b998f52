-- triagent fleet tables: hosts (one row per bundle), the table every other one joins on host_key.
--
-- `triagent rank DIR` writes each table as Parquet files under OUT_DIR/<table>/part-NNNNN.parquet
-- (default OUT_DIR = DIR/fleet). These files are the schema's source of truth for the writer too:
-- agent/rank.py builds its Arrow schema from the column lists below, so the files and the DDL cannot drift.
-- `triagent fleet analyze SOURCE` writes the same tables beside the bundles, one file per bundle and table:
-- SOURCE/tables/<table>/bundle-<id>.parquet (SOURCE a folder or s3://BUCKET/PREFIX); point LOCATION at
-- SOURCE/tables/<table>/, or run `triagent rank SOURCE/tables --tables`.
--
-- Embedded (default): DuckDB reads the folder as is, e.g.
--   SELECT * FROM read_parquet('fleet/hosts/*.parquet') ORDER BY score DESC;
--
-- When a fleet outgrows one machine, copy the same layout to object storage,
--   aws s3 sync DIR/fleet/ s3://BUCKET/PREFIX/      ->  s3://BUCKET/PREFIX/<table>/*.parquet
-- and declare the tables once:
--   Athena (Hive DDL, as written here): replace the LOCATION of each file with
--     's3://BUCKET/PREFIX/<table>/' and run the statement in a database of your choice
--     (CREATE DATABASE triagent_fleet; then the six files). New part files are seen at the next query;
--     there are no partitions to repair.
--   Spark SQL (Hive support on): the same statements run unchanged (STORED AS PARQUET, LOCATION).
--   Trino / Starburst (Hive connector): the same columns in Trino's syntax, e.g.
--     CREATE TABLE hive.triagent_fleet.hosts (host_key varchar, ..., collected_utc timestamp(6), ...)
--       WITH (format = 'PARQUET', external_location = 's3://BUCKET/PREFIX/hosts/');
--     type mapping: STRING -> varchar, INT -> integer, BIGINT -> bigint, BOOLEAN -> boolean,
--     TIMESTAMP -> timestamp(6), ARRAY<T> -> array(T), STRUCT<a:T> -> row(a T).
-- TIMESTAMP columns (named *_utc) hold UTC wall time without a zone, Parquet INT64 microseconds, as Hive's
-- TIMESTAMP type is zoneless: every engine above reads the same instant whatever its session time zone.
-- The ranking queries in agent/rank.py (RANKING_SQL, SHARED_SQL) are plain joins and aggregates (count
-- DISTINCT with FILTER, bool_or, array_agg); on Trino write array_sort for DuckDB's list_sort, min_by for
-- first(... ORDER BY ...) and format_datetime for strftime.
--
-- Column types use the Hive/Athena names the writer understands: STRING, INT, BIGINT, DOUBLE, BOOLEAN,
-- TIMESTAMP, ARRAY<...>, STRUCT<name:TYPE,...>. Every column is nullable: a bundle that cannot be read
-- still gets its hosts row (with `error`), and a field a collector did not record is NULL.
CREATE EXTERNAL TABLE IF NOT EXISTS hosts (
  host_key          STRING     COMMENT 'bundle path relative to the ranked folder (POSIX): the key of every table',
  bundle            STRING     COMMENT 'bundle file name',
  sha256            STRING     COMMENT 'SHA-256 of the bundle file as stored',
  sha256_source     STRING     COMMENT 'computed (hashed while reading) or sidecar (taken from the .sha256 file)',
  sidecar_match     BOOLEAN    COMMENT 'computed hash equals the .sha256 sidecar; NULL when not compared',
  bytes             BIGINT     COMMENT 'bundle file size',
  hostname          STRING     COMMENT 'uname nodename when collected live, else /etc/hostname of the collected root',
  machine_id        STRING     COMMENT '/etc/machine-id of the collected root',
  boot_id           STRING     COMMENT 'kernel boot id (live collections only)',
  kernel            STRING     COMMENT 'kernel release (live collections only)',
  cloud_instance_id STRING     COMMENT 'cloud-init instance id when present',
  live              BOOLEAN    COMMENT 'collected from the running host (false: from a mounted root or image)',
  collected_root    STRING     COMMENT 'the --root the collector read files from',
  profile           STRING     COMMENT 'collection profile',
  status            STRING     COMMENT 'bundle status from the manifest: complete or partial',
  collected_utc     TIMESTAMP  COMMENT 'collection start (custody started_utc)',
  findings_source   STRING     COMMENT 'analysis (findings.jsonl of an analysis bundle beside it) or rules (computed here)',
  analysis          STRING     COMMENT 'analysis bundle used, relative to the ranked folder; NULL when computed',
  memory_analysed   BOOLEAN    COMMENT 'the verdict had a memory image analysed',
  score             INT        COMMENT 'verdict score 0-100 (specs/verdict.toml)',
  recommendation    STRING     COMMENT 'take the full disk: yes, no or needs-memory',
  critical          INT        COMMENT 'findings of severity critical',
  high              INT        COMMENT 'findings of severity high',
  medium            INT        COMMENT 'findings of severity medium',
  low               INT        COMMENT 'findings of severity low',
  info              INT        COMMENT 'findings of severity info',
  findings          INT        COMMENT 'all findings',
  notes             STRING     COMMENT 'remarks on how the row was made, e.g. a stale analysis bundle that was ignored',
  error             STRING     COMMENT 'why the bundle could not be read; the other facts are then NULL'
)
COMMENT 'triagent: one row per triage bundle with its host facts and verdict'
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/hosts/';
