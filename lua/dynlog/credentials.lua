--- Deprecated name, kept until 1.0: use dynlog.aws.credentials.
return require "dynlog.aws.credentials"
