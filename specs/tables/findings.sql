-- triagent fleet tables: findings (one row per finding of a bundle). Layout, engines and types: see hosts.sql.
CREATE EXTERNAL TABLE IF NOT EXISTS findings (
  host_key          STRING     COMMENT 'hosts.host_key',
  rule              STRING     COMMENT 'rule id (specs/rules); NULL for a built-in check no rule covers',
  kind              STRING     COMMENT 'the rule id, or the check kind for cross-view checks',
  title             STRING     COMMENT 'rule title',
  severity          STRING     COMMENT 'critical, high, medium, low or info',
  severity_rank     INT        COMMENT '0 critical .. 4 info, for ordering',
  mitre             ARRAY<STRING> COMMENT 'MITRE ATT&CK technique ids',
  summary           STRING     COMMENT 'one line made from the record',
  source            STRING     COMMENT 'the stream the rule read (histories, ssh_keys, files, findings ...)',
  evidence_member   STRING     COMMENT 'first evidence pointer: bundle member (e.g. triagent/artifacts/histories.jsonl)',
  evidence_line     INT        COMMENT 'first evidence pointer: 1-based line in that member (0: the member itself)',
  evidence          ARRAY<STRUCT<bundle:STRING,member:STRING,line:INT>> COMMENT 'all pointers; bundle is source or analysis',
  facts_json        STRING     COMMENT 'the remaining facts of the finding (pid, command, fingerprint, exe_sha256 ...) as JSON'
)
COMMENT 'triagent: findings of the rules engine or of an analysis bundle'
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/findings/';
