--- Deprecated name, kept until 1.0: use dynlog.pipeline.leases.
return require "dynlog.pipeline.leases"
