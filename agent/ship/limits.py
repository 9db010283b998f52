"""The storage services' limits and our ticket format, shared by the uploader (suspect host) and the
ticket minter (responder): a module of its own so that parsing the command line imports no HTTP stack."""

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB
S3_MIN_PART = 5 * MiB
S3_MAX_PARTS = 10_000
AZURE_MAX_BLOCKS = 50_000
GCS_QUANTUM = 256 * 1024
TICKET_FORMAT = "triagent-upload-ticket/1"
