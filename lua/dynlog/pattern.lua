--- Public entry point: the code is in lua/dynlog/eventbridge/pattern.lua.
return require "dynlog.eventbridge.pattern"
