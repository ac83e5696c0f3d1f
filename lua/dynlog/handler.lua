--- Public entry point: the code is in lua/dynlog/pipeline/handler.lua.
return require "dynlog.pipeline.handler"
