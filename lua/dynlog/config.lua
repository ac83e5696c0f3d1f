--- Deprecated name, kept until 1.0: use dynlog.aws.config.
return require "dynlog.aws.config"
