--- `dynlog import FILE`: newline-delimited JSON events appended, resumably.
local cli_args = require "dynlog.cli.args"
local core = require "dynlog.core"
local dynlog = require "dynlog"
local eventkey = require "dynlog.client.eventkey"
local output = require "dynlog.cli.output"

local ipairs, next, pairs, pcall, tostring, type = ipairs, next, pairs, pcall, tostring, type
local io_open, os_remove, os_rename = io.open, os.remove, os.rename
local math_floor, math_max, math_min = math.floor, math.max, math.min
local str_find, str_format, str_gsub, str_rep, str_sub =
  string.find, string.format, string.gsub, string.rep, string.sub
local tbl_concat, tbl_sort = table.concat, table.sort
local json_decode = core.json_decode
local is_array = core.is_array
local MAX_EXACT = cli_args.MAX_EXACT
local check_count, new_client, positive_integer, usage_error =
  cli_args.check_count, cli_args.new_client, cli_args.positive_integer, cli_args.usage_error
local encode, fail, hint_for = output.encode, output.fail, output.hint_for

local _M = {}

local SAVE_EVERY = 100
local CONCURRENCY = 16
local MAX_CONCURRENCY = 1024

-- Progress state: {line = last line number done, failed = {n = true},
-- pending = {n = true}}: failed lines were refused (fix them, then rerun),
-- pending ones were kept back by a failure of the operation (rerun).
local function load_state(path)
  local f = io_open(path, "rb")
  if not f then return { line = 0, failed = {}, pending = {} } end
  local text = f:read("*a")
  f:close()
  local doc = json_decode(text or "")
  if type(doc) ~= "table" or type(doc.line) ~= "number" or doc.line < 0 or doc.line ~= math_floor(doc.line) then
    return nil, dynlog.errors.new("bad_state", "progress file " .. path .. " does not hold {\"line\": N, ...}")
  end
  local function line_set(list)
    local set = {}
    for _, n in ipairs(type(list) == "table" and list or {}) do
      if type(n) == "number" then set[n] = true end
    end
    return set
  end
  return { line = doc.line, failed = line_set(doc.failed), pending = line_set(doc.pending) }
end

local function sorted_lines(set)
  local list = {}
  for n in pairs(set) do list[#list + 1] = n end
  tbl_sort(list)
  return list
end

local function save_state(path, file, state)
  local doc = { file = file, line = state.line, failed = core.array(sorted_lines(state.failed)) }
  if next(state.pending) then doc.pending = sorted_lines(state.pending) end
  local tmp = path .. ".tmp"
  local f, err = io_open(tmp, "wb")
  if not f then return nil, dynlog.errors.new("io", "cannot write " .. tmp .. ": " .. tostring(err)) end
  f:write(encode(doc), "\n")
  f:close()
  local ok, rerr = os_rename(tmp, path)
  if not ok then
    os_remove(tmp)
    return nil, dynlog.errors.new("io", "cannot write " .. path .. ": " .. tostring(rerr))
  end
  return true
end

-- Opens the input: stdin for "-", else the file. Returns the file, whether
-- it is a regular file (its next line is there without waiting, and it can
-- be read twice) and then its number of lines, for the progress bar; or
-- nil, err. A pipe (`<(zcat f.gz)`, a FIFO) is read once, as it comes: its
-- lines are not counted beforehand.
local function open_input(ctx, file)
  if file == "-" then return ctx.stdin, ctx.stdin:seek("cur") ~= nil, nil end
  local f, oerr = io_open(file, "rb")
  if not f then return nil, dynlog.errors.new("io", tostring(oerr)) end
  if not f:seek("end") then return f, false, nil end
  f:seek("set", 0)
  local total, last = 0, "\n"
  while true do
    local chunk, rerr = f:read(65536)
    if not chunk then
      if rerr then
        f:close()
        return nil, dynlog.errors.new("io", "cannot read " .. file .. ": " .. tostring(rerr))
      end
      break
    end
    local _, newlines = str_gsub(chunk, "\n", "")
    total, last = total + newlines, str_sub(chunk, -1)
  end
  if last ~= "\n" then total = total + 1 end
  f:seek("set", 0)
  return f, true, total
end

-- A number in JSON as the text of an id: only integers held exactly
-- (within MAX_EXACT), else nil.
local function id_text(n)
  if n ~= math_floor(n) or n > MAX_EXACT or n < -MAX_EXACT then return nil end
  return str_format("%d", n)
end

local UTF8_BOM = "\239\187\191"

-- A line's "event_id" (a string) makes its event exactly-once: an import
-- run again, or resumed after a crash in the middle of a batch, finds it
-- written (c:append_many with event_id).
local function with_event_id(ev, doc)
  local event_id = doc.event_id
  if event_id == nil or event_id == core.null then return ev end
  if type(event_id) ~= "string" then return nil, '"event_id" must be a string' end
  ev.event_id = event_id
  return ev
end

-- The fields of the seed format's line {"pk", "sk", "type", "log",
-- "payload"}: log and id from the partition key, which must agree with
-- "log" and "payload.id"; the sort key kept with --keep-keys.
local function seed_event(doc, payload, meta, job)
  if type(doc.pk) ~= "string" then return nil, '"pk" must be a string' end
  local log, id = eventkey.parse(doc.pk)
  if not log then return nil, '"pk" must be "<log>#<id>#stream", got ' .. encode(doc.pk) end
  if doc.log ~= nil and doc.log ~= log then
    return nil, '"log" is ' .. encode(doc.log) .. ' but "pk" is of log ' .. encode(log)
  end
  local pid = payload and payload.id
  if pid ~= nil and pid ~= id then
    return nil, '"payload.id" is ' .. encode(pid) .. ' but "pk" is of id ' .. encode(id)
  end
  if type(doc.type) ~= "string" then return nil, '"type" must be a string' end
  local ev = { log = log, id = id, type = doc.type, payload = payload, meta = meta }
  if job.keep_keys then
    local sk = doc.sk
    if job.sort_key == "ulid" then
      if type(sk) ~= "string" or not core.ulid_decode(sk) then
        return nil, '"sk" must be a ULID to keep it in a ulid-mode table, got ' .. encode(sk)
      end
    elseif type(sk) ~= "number" or sk < 1 or not id_text(sk) then
      return nil, '"sk" must be a version number (1 to ' .. MAX_EXACT .. ') to keep it in a version-mode table, got '
        .. encode(sk)
    end
    ev.sk = sk
    local t = doc.appended_at
    if t ~= nil and t ~= core.null then
      if type(t) ~= "number" or t < 0 or not id_text(t) then
        return nil, '"appended_at" must be milliseconds since the epoch, got ' .. encode(t)
      end
      ev.appended_at = t
    end
  end
  return with_event_id(ev, doc)
end

-- The event of one input line, or nil, message. Two formats: dynlog's
-- {"log", "id", "type", "payload"} and the seed format (with "pk").
local function line_event(text, job)
  local doc, _, message = json_decode(text)
  if doc == nil then return nil, "invalid JSON: " .. tostring(message) end
  if type(doc) ~= "table" or is_array(doc) then return nil, "not a JSON object" end
  local payload = doc.payload
  if payload == core.null then payload = nil end
  if payload ~= nil and (type(payload) ~= "table" or is_array(payload)) then
    return nil, '"payload" must be a JSON object'
  end
  local meta = doc.meta
  if meta == core.null then meta = nil end
  if meta ~= nil and (type(meta) ~= "table" or is_array(meta)) then
    return nil, '"meta" must be a JSON object'
  end
  if doc.pk ~= nil then return seed_event(doc, payload, meta, job) end
  local id = doc.id
  if type(id) == "number" then
    id = id_text(id)
    if not id then
      return nil, '"id" is a number that cannot be held exactly (integers up to ' .. MAX_EXACT
        .. '): write it as a string'
    end
  end
  for _, f in ipairs({ { "log", doc.log }, { "id", id }, { "type", doc.type } }) do
    if type(f[2]) ~= "string" then return nil, '"' .. f[1] .. '" must be a string' end
  end
  return with_event_id({ log = doc.log, id = id, type = doc.type, payload = payload, meta = meta }, doc)
end

-- Failures that belong to a line (its event is invalid) rather than to the
-- operation (the table, the network): the first are skipped and reported,
-- the second stop the import.
local LINE_ERRORS = { invalid_argument = true, too_large = true }

local function new_progress(ctx, total)
  local bar = { last = 0, shown = false }
  if not ctx.isatty(2) then
    return { update = function() end, clear = function() end, done = function() end }
  end
  local function draw(line, failed)
    local text
    if total and total > 0 then
      local fraction = math_min(1, line / total)
      local filled = math_floor(fraction * 30 + 0.5)
      text = str_format("\r  [%s%s] %d/%d lines %3d%%", str_rep("#", filled), str_rep("-", 30 - filled), line, total,
        math_floor(fraction * 100))
    else
      text = str_format("\r  %d lines", line)
    end
    if failed > 0 then text = text .. str_format(", %d failed", failed) end
    ctx.err:write(text, "\27[K")
    ctx.err:flush()
    bar.shown = true
  end
  function bar.update(line, failed, force)
    local now = core.now()
    if force or now - bar.last >= 0.1 then
      bar.last = now
      draw(line, failed)
    end
  end
  function bar.clear()
    if bar.shown then ctx.err:write("\r\27[K") bar.shown = false end
  end
  function bar.done(line, failed)
    draw(line, failed)
    ctx.err:write("\n")
    bar.shown = false
  end
  return bar
end

-- The next lines that need doing, up to `size`: {n=, event=, problem=}
-- each (neither for a blank line). Counts the lines skipped in r.
local function read_batch(job, r, size)
  local state, batch = job.state, {}
  while #batch < size and not core.signal_caught() do
    -- read, not lines(): an interrupted read returns an error instead of raising it
    local text, rerr = job.input:read("*l")
    if text == nil then
      if rerr and not core.signal_caught() then
        r.stop_err, r.stop_line = dynlog.errors.new("io", "cannot read: " .. tostring(rerr)), r.line_no + 1
      end
      r.ended = true
      break
    end
    local n = r.line_no + 1
    r.line_no = n
    if n == 1 then text = str_gsub(text, "^" .. UTF8_BOM, "") end
    if n <= state.line and not state.failed[n] and not state.pending[n] then
      r.skipped = r.skipped + 1
    elseif job.limit and r.processed >= job.limit then
      r.stopped_by_limit, r.line_no, r.ended = true, n - 1, true
      break
    else
      r.processed = r.processed + 1
      local entry = { n = n }
      if str_find(text, "%S") then
        -- a bad line is that line's failure, whatever it holds
        local ok, ev, problem = pcall(line_event, text, job)
        if ok then entry.event, entry.problem = ev, problem else entry.problem = "cannot read it: " .. tostring(ev) end
      end
      batch[#batch + 1] = entry
    end
  end
  return batch
end

-- The problem of a line whose event the library refused, or nil when the
-- failure is the operation's: a kept sort key taken by another event
-- (conflict) belongs to its line too.
local function line_problem(entry, err)
  if LINE_ERRORS[err.code] or (err.code == "conflict" and entry.event.sk ~= nil) then
    return err.code .. ": " .. str_gsub(tostring(err.message), "^events%[%d+%]: ", "")
  end
end

-- Appends the events of a batch with many requests in flight; marks each
-- entry written (and `existing`, already there at its kept key), or with
-- the problem of its line, or `pending` with the failure of the operation
-- that kept it from being written. Events held back behind a line's
-- problem in their stream go out again in another round.
local function append_batch_of_lines(job, batch)
  local todo = {}
  for _, entry in ipairs(batch) do
    if entry.event then todo[#todo + 1] = entry end
  end
  while #todo > 0 do
    local events = {}
    for k, entry in ipairs(todo) do events[k] = entry.event end
    local results, errs, partial = job.client:append_many(events, { concurrency = job.concurrency })
    results = results or partial
    local again = {}
    for k, entry in ipairs(todo) do
      local err = errs and errs[k]
      local cause = err and err.code == "aborted" and err.cause
      if not err then
        entry.written, entry.existing = true, results[k].existing
      elseif cause and cause.index and line_problem(todo[cause.index], cause) then
        again[#again + 1] = entry
      else
        entry.problem = line_problem(entry, err)
        if not entry.problem then entry.pending = cause or err end
      end
    end
    todo = again
  end
end

-- Records a batch's outcome in job.state and r, in line order.
local function record_batch(job, r, batch)
  local ctx, state = job.ctx, job.state
  for _, entry in ipairs(batch) do
    local n = entry.n
    state.failed[n], state.pending[n] = nil, nil
    if entry.pending then
      state.pending[n] = true
      if not r.stop_err then r.stop_err, r.stop_line = entry.pending, n end
    elseif entry.problem then
      state.failed[n] = true
      r.failed = r.failed + 1
      job.bar.clear()
      ctx.err:write("dynlog: line ", tostring(n), ": ", entry.problem, "\n")
    elseif entry.existing then
      r.existing = r.existing + 1
    elseif entry.written then
      r.imported = r.imported + 1
    end
    state.line = math_max(state.line, n)
  end
end

-- Reads and appends the lines of job.input, updating job.state. Returns
-- {imported=, skipped=, failed=, line_no=, stop_err=, stop_line=,
-- stopped_by_limit=}: stop_err is the failure that stopped it (the
-- operation's, not a line's). Lines go out in batches of job.every (one at
-- a time from a pipe or terminal, where the next line may be long in
-- coming); the progress is saved after each.
local function import_lines(job)
  local r = { imported = 0, existing = 0, skipped = 0, failed = 0, line_no = 0, processed = 0, limit = job.limit }
  local size = job.seekable and job.every or 1
  local since_save = 0
  while not (r.ended or r.stop_err or core.signal_caught()) do
    local batch = read_batch(job, r, size)
    append_batch_of_lines(job, batch)
    record_batch(job, r, batch)
    since_save = since_save + #batch
    if since_save >= job.every or r.stop_err then
      since_save = 0
      local ok, werr = job.save()
      if not ok then r.stop_err, r.stop_line = r.stop_err or werr, r.stop_line or r.line_no end
    end
    if #batch > 0 then job.bar.update(batch[#batch].n, r.failed) end
  end
  return r
end

-- The summary on stdout, what to do next on stderr, and the exit status.
local function import_report(ctx, file, state_path, state, r, signal)
  local still_failed, pending = sorted_lines(state.failed), sorted_lines(state.pending)
  -- events already there: at their kept keys, or under their event ids
  local keep_keys = ctx.opts["keep-keys"] == true or r.existing > 0
  if ctx.json then
    ctx.out:write(encode({ imported = r.imported, skipped = r.skipped, failed = core.array(still_failed),
                           pending = core.array(pending), line = state.line, state = state_path,
                           existing = keep_keys and r.existing or nil }), "\n")
  else
    ctx.out:write(str_format("imported %d event(s); ", r.imported))
    if keep_keys then ctx.out:write(str_format("%d already there; ", r.existing)) end
    ctx.out:write(str_format("skipped %d line(s) done before; %d line(s) failed", r.skipped, #still_failed))
    if state_path then ctx.out:write("; progress in ", state_path) end
    ctx.out:write("\n")
  end
  ctx.out:flush()
  local resume = not state_path and "stdin has no progress file: pass --state PATH to make an import resumable"
    or pending[1] and ("rerun the same command to resume from line " .. pending[1])
    or ("rerun the same command to resume after line " .. state.line)
  if r.stop_err then
    ctx.err:write("dynlog: import stopped at line ", tostring(r.stop_line or r.line_no), "\n")
    local hint = hint_for(ctx, r.stop_err)
    return fail(ctx, r.stop_err, (hint and (hint .. "; then ") or "") .. resume)
  end
  if signal then
    ctx.err:write("dynlog: interrupted by SIG", signal, " after line ", tostring(state.line), "; ", resume, "\n")
    return 1
  end
  if r.stopped_by_limit then
    ctx.err:write("dynlog: stopped after --limit ", tostring(r.limit), " line(s); ", resume, "\n")
  end
  if #still_failed > 0 then
    ctx.err:write("dynlog: ", tostring(#still_failed), " line(s) failed (", tbl_concat(still_failed, ", "),
      "); fix them in ", file == "-" and "the input" or file, " and run the same command again to retry them\n")
    return 1
  end
  return 0
end

_M.import = {
  usage = "import FILE",
  summary = "append newline-delimited JSON events, resumably",
  options = { state = "value", ["save-every"] = "value", limit = "value", concurrency = "value",
              ["keep-keys"] = "flag" },
  help = [[
Appends the events of FILE ("-" for stdin), one JSON object per line:
  {"log": "users", "id": "42", "type": "signup", "payload": {...}, "meta": {...}}
("payload" and "meta", the event's metadata, may be left out; a numeric id is taken as its decimal text, if it
is an integer up to 9007199254740991; blank lines and a UTF-8 byte order mark
at the start are skipped). Lines of the seed format, as the original Node
tools write events.ldjson, are read too:
  {"pk": "users#42#stream", "sk": ..., "type": "signup", "log": "users", "payload": {...}}
pk must be "<log>#<id>#stream" and agree with "log" and "payload.id". They are
appended as new events, with new sort keys; with --keep-keys each keeps its
sk (a ULID in ulid mode, a version number in version mode) and its time:
its "appended_at" (milliseconds) when the line has one, else the ULID's
time in ulid mode and none in version mode (when it was first appended is
not known); written only where no event is: an identical event already at that key counts as there
(so a rerun writes nothing twice), another one fails the line (conflict).
From a file, lines go out in batches of --save-every
lines, with up to --concurrency requests in flight (append_many): the events
of one stream are written one after the other, in the order of the file.
From a pipe or a terminal, each line is appended as soon as it is read. A
progress bar is drawn on stderr when it is a terminal (with a total of lines
for a regular file, without for a pipe: a pipe is read only once).

Resumable: the number of the last line done is kept in a progress file
(FILE.progress, or --state PATH; stdin has none unless --state is given; a
pipe named as FILE, such as <(zcat events.gz), needs --state),
written after every batch and at the end, as
  {"file": "...", "line": N, "failed": [n, ...], "pending": [n, ...]}
A rerun skips lines up to N except the failed and pending ones, which it
tries again, so fix a failed line in FILE and run the same command. Ctrl-C
(SIGINT), SIGTERM, SIGHUP and SIGPIPE stop it after the current batch, with
the progress saved. Lines that fail (bad JSON, an invalid event) are reported on stderr with their number and the
import goes on; the exit status is then 1. A failure of the operation itself
(no table, no network) stops the import after the batch, with the lines it
kept back saved as pending: rerun to resume. An import killed in the middle
of a batch (SIGKILL, a crash) appends that batch's lines again when resumed
(--save-every 1 avoids that, at one request in flight and one write per
line; with --keep-keys, or lines with an "event_id", nothing is written
twice).
Prints a summary; with --json
{"imported", "skipped", "failed", "pending", "line", "state"} (and
"existing", the events already there, with --keep-keys or when lines with
an "event_id" were there already).

options:
  --keep-keys       seed-format lines keep their sort key (sk)
  --state PATH      the progress file (default FILE.progress)
  --save-every N    lines per batch, saved after each (default 100)
  --concurrency N   requests in flight (default 16)
  --limit N         process at most N lines in this run, then stop (exit 0)]],
  run = function(ctx, args)
    check_count(args, 1, 1, ctx)
    local file = args[1]
    local every = positive_integer(ctx.opts, "save-every") or SAVE_EVERY
    local concurrency = positive_integer(ctx.opts, "concurrency") or CONCURRENCY
    if concurrency > MAX_CONCURRENCY then
      usage_error("--concurrency must be at most " .. MAX_CONCURRENCY)
    end
    local limit = positive_integer(ctx.opts, "limit")
    local input, seekable, total = open_input(ctx, file)
    if not input then return fail(ctx, seekable, "check the file name") end
    local state_path = ctx.opts.state
    if not state_path and file ~= "-" then
      if not seekable then
        input:close()
        usage_error(file .. " is not a regular file (a pipe?): it can be read only once, and its progress cannot be"
          .. " kept beside it; pass --state PATH for the progress file")
      end
      state_path = file .. ".progress"
    end
    local state = { line = 0, failed = {}, pending = {} }
    if state_path then
      local serr
      state, serr = load_state(state_path)
      if not state then return fail(ctx, serr, "remove it to start from the first line") end
    end
    local c, cerr = new_client(ctx)
    if not c then return fail(ctx, cerr) end

    local job = {
      ctx = ctx, client = c, input = input, state = state, every = every, limit = limit,
      concurrency = concurrency, bar = new_progress(ctx, total),
      -- a regular file: its next line is there without waiting
      seekable = seekable,
      keep_keys = ctx.opts["keep-keys"] == true, sort_key = ctx.sort_key,
    }
    function job.save()
      if not state_path then return true end
      return save_state(state_path, file, state)
    end
    core.signal_catch()
    local r = import_lines(job)
    local signal = core.signal_caught()
    core.signal_restore()
    if input ~= ctx.stdin then input:close() end
    local saved, werr = job.save()
    if not saved then r.stop_err = r.stop_err or werr end
    job.bar.done(r.line_no, r.failed)
    return import_report(ctx, file, state_path, state, r, signal)
  end,
}

return _M
