--- Deprecated name, kept until 1.0: use dynlog.transport.concurrent.
return require "dynlog.transport.concurrent"
