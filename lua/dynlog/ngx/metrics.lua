--- dynlog's metrics for Prometheus, on a location of nginx:
-- dynlog.ngx.metrics is its public name.
--
--   lua_shared_dict dynlog_metrics 1m;   # in http {}: the workers' shared counters
--   location = /metrics { content_by_lua_block { require("dynlog.ngx").metrics() } }
local metrics = require "dynlog.base.metrics"

local error, next, type = error, next, type

local _M = {}

--- metrics() in content_by_lua*: answers GET with the text exposition
-- format of every metric of every worker (dynlog.base.metrics, kept in the
-- lua_shared_dict "dynlog_metrics", or the name given to
-- dynlog.metrics.configure). Raises when nginx has no such dict: each
-- worker would keep its own counters and a scrape would see one worker's.
function _M.serve(opts)
  if opts ~= nil and (type(opts) ~= "table" or next(opts) ~= nil) then
    error("metrics: takes no options (the shared dict is named by dynlog.metrics.configure)", 2)
  end
  local ngx = ngx -- luacheck: ignore
  local dict, name = metrics.shared_dict()
  if not dict then
    error("metrics: nginx has no lua_shared_dict " .. name .. ", where the workers keep dynlog's metrics: add"
      .. " `lua_shared_dict " .. name .. " 1m;` to the http block", 2)
  end
  ngx.status = 200
  ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
  ngx.print(metrics.prometheus())
  return ngx.exit(200)
end

return _M
