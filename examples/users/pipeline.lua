-- The users example's pipeline, described once: `dynlog up` runs it on this
-- machine (DynamoDB Local, nginx with the consumer, the local bus and the
-- receiver), `dynlog deploy --template out.json` writes its CloudFormation
-- template. docs/deploying.md describes every field.
return {
  name = "users",
  -- The event log: its stream (NEW_AND_OLD_IMAGES) feeds the trigger.
  log = {
    table = "users-events",
    sort_key = "ulid",
    billing = "on_demand",
    pitr = true,
    sse = "aws_managed", -- or a KMS key ARN, or "aws_owned"
    ttl = "expires_at", -- the attribute of logs with a max_age
    tags = { app = "users" },
  },
  -- The read models the targets project into.
  read_models = {
    core = { table = "users-core", tags = { app = "users" } },
  },
  -- The consumer's leases and checkpoints.
  checkpoints = { table = "users-checkpoints" },
  -- The bus the trigger publishes to, and an archive to replay from.
  bus = { name = "dynamodb-log", archive = { retention_days = 30 } },
  -- The trigger: "consumer" (dynlog's consumer in nginx or a Lua process),
  -- "lambda" (a Lua function on the stream) or "pipe" (an EventBridge Pipe).
  trigger = { kind = "consumer" },
  rules = {
    {
      name = "users-to-core",
      pattern = { source = { "dynamodb-log" }, ["detail-type"] = { "stream changes" },
                  detail = { log = { "users" } } },
      targets = {
        {
          name = "users-projection",
          kind = "api_destination",
          endpoint = "https://app.example.com/users",
          auth = { kind = "api_key", header = "x-api-key",
                   secret = { secrets_manager = "dynlog/users/receiver", json_key = "api_key" } },
          project = "examples.handler", -- the module whose project(event) the receiver runs
          read_model = "core",
          retry = { max_age = 86400, attempts = 185 },
          dead_letter = { retention_days = 14 },
        },
      },
    },
  },
}
