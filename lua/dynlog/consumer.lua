--- Public entry point: the code is in lua/dynlog/pipeline/consumer.lua.
return require "dynlog.pipeline.consumer"
