--- Deprecated name, kept until 1.0: use dynlog.logger.
return require "dynlog.logger"
