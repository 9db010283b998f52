-- triagent fleet tables: processes (light: one row per live process record). Layout, engines and types: see hosts.sql.
CREATE EXTERNAL TABLE IF NOT EXISTS processes (
  host_key          STRING     COMMENT 'hosts.host_key',
  pid               BIGINT     COMMENT 'process id',
  ppid              BIGINT     COMMENT 'parent process id',
  name              STRING     COMMENT 'comm',
  exe               STRING     COMMENT 'executable path (readlink of /proc/PID/exe)',
  exe_sha256        STRING     COMMENT 'SHA-256 of the executable',
  exe_deleted       BOOLEAN    COMMENT 'the executable was deleted from disk',
  cmdline           STRING     COMMENT 'command line, arguments joined by spaces (cut at 1000 characters)',
  username          STRING     COMMENT 'real user',
  start_time_utc    TIMESTAMP  COMMENT 'process start',
  kernel_thread     BOOLEAN    COMMENT 'a kernel thread',
  member            STRING     COMMENT 'bundle member holding the record',
  line              INT        COMMENT '1-based line of the record in that member'
)
COMMENT 'triagent: live processes of each bundle'
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/processes/';
