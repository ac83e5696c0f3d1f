--- Deprecated name, kept until 1.0: use dynlog.consumer.
return require "dynlog.pipeline.consumer"
