-- Lua code runs on Lua 5.4 and on LuaJIT (nginx): only what both have.
std = "min"
self = false          -- methods may ignore self
ignore = { "581" }    -- `not (x < y)` is deliberate: it is true for NaN
files["spec"] = { std = "max+busted" }  -- specs probe 5.4-only features behind guards
files["spec/support"] = { std = "min" }
