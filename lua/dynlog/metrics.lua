--- Public entry point: the code is in lua/dynlog/base/metrics.lua.
return require "dynlog.base.metrics"
