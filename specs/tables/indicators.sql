-- triagent fleet tables: indicators (one row per value seen in a record) for pivoting across hosts.
-- Layout, engines and types: see hosts.sql. kind is one of:
--   ssh_key_fingerprint  SHA256 fingerprint of an authorized_keys entry (access granted to a key)
--   remote_ip            peer of a connection, login source (wtmp/btmp/lastlog), or an IPv4 in a command
--   exe_sha256           SHA-256 of a running process's executable
--   command_line         a shell history line or a process command line
--   cron_command         the command of a crontab entry
--   url                  an http(s)/ftp URL in a command line, history line or crontab entry
CREATE EXTERNAL TABLE IF NOT EXISTS indicators (
  host_key          STRING     COMMENT 'hosts.host_key',
  kind              STRING     COMMENT 'ssh_key_fingerprint, remote_ip, exe_sha256, command_line, cron_command or url',
  value             STRING     COMMENT 'the indicator, as recorded (commands cut at 1000 characters)',
  stream            STRING     COMMENT 'source stream (processes, connections, histories, cron, ssh_keys, wtmp ...)',
  member            STRING     COMMENT 'bundle member holding the record',
  line              INT        COMMENT '1-based line of the record in that member',
  context           STRING     COMMENT 'who or where: user, path or process name of the record',
  flagged           BOOLEAN    COMMENT 'the record is evidence of a finding on this host, or the value is one of its facts'
)
COMMENT 'triagent: indicators extracted from bundle records'
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/indicators/';
