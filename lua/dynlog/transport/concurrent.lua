--- Many requests in flight from one client.
--
--   concurrent.run(client, n, worker)
--
-- runs worker(view) n times at once and returns when every run has ended.
-- `view` stands for the client (every method works on it) but its requests
-- and sleeps let the other runs go on meanwhile: inside nginx each run is a
-- light thread (ngx.thread) over cosockets; elsewhere each run is a
-- coroutine whose requests go through one curl multi handle, kept by the
-- client so that its connections are reused from one call to the next.
--
-- Writes the runs make to the view (the clock skew learnt from a server, for
-- one) go to the client. A client with a transport of its own (opts.transport)
-- has requests that block: the runs then take turns at each request.
-- An error raised in a run is raised again by run(), after the requests still
-- in flight are abandoned.
local core = require "dynlog.core"
-- dynlog.transport.curl and the C module dynlog.curl, loaded by multi_of:
-- outside nginx only, so that an nginx worker never maps libcurl.
local http

local error, setmetatable, tostring, type = error, setmetatable, tostring, type
local co_create, co_resume, co_status, co_yield = coroutine.create, coroutine.resume, coroutine.status,
  coroutine.yield
local debug_traceback = debug.traceback
local math_max, math_min = math.max, math.min
local tbl_remove = table.remove
local monotonic, sleep = core.monotonic, core.sleep

local _M = {}

-- What a run yields to the scheduler.
local WAIT_REQUEST, WAIT_TIMER = {}, {}

local in_nginx = require("dynlog.base.nginx").in_nginx

---------------------------------------------------------------------------
-- Inside nginx: light threads
---------------------------------------------------------------------------

local function run_threads(ngx, client, n, worker)
  client:_transport() -- raises, with advice, in a phase without cosockets
  local threads = {}
  for i = 1, n do
    local thread, err = ngx.thread.spawn(worker, client)
    if not thread then error("dynlog.transport.concurrent: could not start a light thread: " .. tostring(err), 3) end
    threads[i] = thread
  end
  local failure
  for i = 1, n do
    local ok, err = ngx.thread.wait(threads[i])
    if not ok and not failure then failure = err end
  end
  if failure then error(failure, 0) end
end

---------------------------------------------------------------------------
-- Elsewhere: coroutines over a curl multi handle
---------------------------------------------------------------------------

local function multi_of(client)
  local m = client._multi
  if not m then
    http = http or require "dynlog.transport.curl"
    m = require("dynlog.curl").http_multi(client.transport_opts)
    client._multi = m
  end
  return m
end

-- The view's transport: starts the request on the multi handle, then waits
-- for the scheduler to hand back its outcome.
local function multi_transport(m)
  return {
    request = function(_, req)
      local id, code, message = m:start(req.method or "GET", req.url, req.headers, req.body, req.timeout)
      if not id then return nil, http.failure(code, message) end
      local res, rcode, rmessage, unsent = co_yield(WAIT_REQUEST, id)
      if res then return res end
      return nil, http.failure(rcode, rmessage, unsent)
    end,
  }
end

local function timer_sleep(seconds)
  co_yield(WAIT_TIMER, seconds)
end

local function view_of(client, transport)
  return setmetatable({ transport = transport, sleep = timer_sleep },
                      { __index = client, __newindex = client })
end

local function new_scheduler(m)
  return {
    multi = m,
    waiting = {}, -- request id → run
    timers = {},  -- {at=, run=}, in no order
    alive = 0,
  }
end

local function resume(s, run, ...)
  local ok, kind, arg = co_resume(run, ...)
  if not ok then
    if s.multi then s.multi:cancel() end
    error(debug_traceback(run, tostring(kind)), 0)
  end
  if co_status(run) == "dead" then
    s.alive = s.alive - 1
  elseif kind == WAIT_REQUEST then
    s.waiting[arg] = run
  elseif kind == WAIT_TIMER then
    s.timers[#s.timers + 1] = { at = monotonic() + math_max(0, arg or 0), run = run }
  else
    if s.multi then s.multi:cancel() end
    error("dynlog.transport.concurrent: a run yielded outside dynlog's requests and sleeps", 0)
  end
end

-- Resumes the runs whose timers are due; returns the seconds until the
-- next one (nil when none is set).
local function fire_timers(s)
  local now, next_in = monotonic(), nil
  local i = 1
  while i <= #s.timers do
    local t = s.timers[i]
    if t.at <= now then
      tbl_remove(s.timers, i)
      resume(s, t.run)
      now = monotonic()
    else
      next_in = next_in and math_min(next_in, t.at - now) or (t.at - now)
      i = i + 1
    end
  end
  return next_in
end

local function run_coroutines(client, n, worker, transport, m)
  local s = new_scheduler(m)
  local view = view_of(client, transport)
  for _ = 1, n do
    s.alive = s.alive + 1
    resume(s, co_create(worker), view)
  end
  while s.alive > 0 do
    local next_in = fire_timers(s)
    if m and m:in_flight() > 0 then
      local id, res, code, message, unsent = m:next(next_in and math_min(next_in, 1) or 1)
      if id then
        local run = s.waiting[id]
        s.waiting[id] = nil
        resume(s, run, res, code, message, unsent)
      end
    elseif next_in then
      sleep(next_in)
    elseif s.alive > 0 then
      error("dynlog.transport.concurrent: runs wait for nothing", 0) -- cannot happen: a scheduler bug
    end
  end
end

--- run(client, n, worker): see the top of this file.
function _M.run(client, n, worker)
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then error("concurrent.run: n must be a positive integer", 2) end
  if type(worker) ~= "function" then error("concurrent.run: worker must be a function", 2) end
  local ngx = in_nginx()
  if ngx then return run_threads(ngx, client, n, worker) end
  if client.transport ~= nil and not client._own_transport then
    -- A transport of the caller's: its requests block, so runs only overlap in their sleeps.
    return run_coroutines(client, n, worker, client.transport, nil)
  end
  local m = multi_of(client)
  return run_coroutines(client, n, worker, multi_transport(m), m)
end

return _M
