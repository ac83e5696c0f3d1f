--- Deprecated name, kept until 1.0: use dynlog.aws.retry.
return require "dynlog.aws.retry"
