--- Public entry point: the code is in lua/dynlog/pipeline/indexer.lua.
return require "dynlog.pipeline.indexer"
