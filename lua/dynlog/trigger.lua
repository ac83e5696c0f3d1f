--- Public entry point: the code is in lua/dynlog/pipeline/trigger.lua.
return require "dynlog.pipeline.trigger"
