-- dynlog.metrics in a plain Lua process: the registry, its text format
-- (checked by promtool), and docs/metrics.md against the one table of metrics.
local metrics = require "dynlog.metrics"
local promtool = require "spec.support.promtool"
local run = require "spec.support.run"

describe("dynlog.metrics", function()
  before_each(function() metrics.reset() end)

  it("keeps counters, gauges and histograms by label values", function()
    metrics.inc("dynlog_requests_total", 1, "dynamodb", "PutItem", "ok")
    metrics.inc("dynlog_requests_total", 2, "dynamodb", "PutItem", "ok")
    metrics.inc("dynlog_requests_total", 1, "dynamodb", "PutItem", "throttled")
    metrics.set("dynlog_consumer_lag_seconds", 2.5, "g")
    metrics.set("dynlog_consumer_lag_seconds", 0, "g")
    for _, v in ipairs({ 0.004, 0.005, 0.3, 11 }) do
      metrics.observe("dynlog_request_duration_seconds", v, "dynamodb", "PutItem")
    end
    assert.are.equal(3, metrics.value("dynlog_requests_total",
      { service = "dynamodb", operation = "PutItem", outcome = "ok" }))
    assert.are.equal(1, metrics.value("dynlog_requests_total",
      { service = "dynamodb", operation = "PutItem", outcome = "throttled" }))
    assert.are.equal(0, metrics.value("dynlog_requests_total",
      { service = "dynamodb", operation = "Query", outcome = "ok" }))
    assert.are.equal(0, metrics.value("dynlog_consumer_lag_seconds", { group = "g" }))
    local h = metrics.value("dynlog_request_duration_seconds", { service = "dynamodb", operation = "PutItem" })
    assert.are.equal(4, h.count)
    assert.is_true(math.abs(h.sum - 11.309) < 1e-9)
    local text = metrics.prometheus()
    -- Buckets are cumulative, an observation on a bound counts in it, +Inf holds all.
    assert.is_truthy(text:find('dynlog_request_duration_seconds_bucket{service="dynamodb",operation="PutItem",'
      .. 'le="0.005"} 2\n', 1, true), text)
    assert.is_truthy(text:find('le="0.5"} 3\n', 1, true))
    assert.is_truthy(text:find('le="10"} 3\n', 1, true))
    assert.is_truthy(text:find('le="+Inf"} 4\n', 1, true))
    assert.is_truthy(text:find('dynlog_request_duration_seconds_count{service="dynamodb",operation="PutItem"} 4\n',
      1, true))
  end)

  it("writes text that promtool check metrics accepts, with label values escaped", function()
    metrics.inc("dynlog_requests_total", 1, "events", "PutEvents", "transport")
    metrics.inc("dynlog_consumer_records_total", 5, 'we"ird\\group\nname')
    metrics.set("dynlog_feed_head", 123456789012, "t-feed")
    metrics.observe("dynlog_request_duration_seconds", 0.02, "streams", "GetRecords")
    metrics.inc("dynlog_publish_entries_total", 3)
    local text = metrics.prometheus()
    assert.is_truthy(text:find('dynlog_consumer_records_total{group="we\\"ird\\\\group\\nname"} 5\n', 1, true), text)
    assert.is_truthy(text:find("dynlog_feed_head{feed=\"t-feed\"} 123456789012\n", 1, true), text)
    assert.is_truthy(text:find("dynlog_publish_entries_total 3\n", 1, true), text)
    local status, out = promtool.check(text)
    assert.are.equal(0, status, out .. "\n" .. text)
    assert.are.equal("", out)
    -- Nothing kept yet: HELP and TYPE only, accepted too.
    metrics.reset()
    status, out = promtool.check(metrics.prometheus())
    assert.are.equal(0, status, out)
    assert.are.equal("", out)
  end)

  it("gives every series in snapshot(), with its labels", function()
    metrics.inc("dynlog_receiver_deliveries_total", 1, 200)
    metrics.inc("dynlog_receiver_deliveries_total", 1, 500)
    metrics.inc("dynlog_receiver_deliveries_total", 1, 200)
    local got = {}
    for _, s in ipairs(metrics.snapshot()) do
      if s.name == "dynlog_receiver_deliveries_total" then got[s.labels.status] = s.value end
    end
    assert.are.same({ ["200"] = 2, ["500"] = 1 }, got)
  end)

  it("raises on a metric it does not know and on a missing label value", function()
    assert.has_error(function() metrics.inc("dynlog_no_such_total", 1) end,
      "dynlog.metrics: no metric dynlog_no_such_total")
    assert.has_error(function() metrics.inc("dynlog_consumer_records_total", 1) end,
      "dynlog.metrics: dynlog_consumer_records_total needs the label group")
    assert.has_error(function() metrics.value("dynlog_nope") end, "dynlog.metrics.value: no metric dynlog_nope")
    local msg = run.raised(function() metrics.configure{ shared_dcit = "x" } end)
    assert.matches('dynlog.metrics.configure: unknown option "shared_dcit" (did you mean "shared_dict"?)', msg, 1,
      true)
    assert.matches("metrics_spec.lua", msg, 1, true)
    assert.has_error(function() metrics.configure{ shared_dict = "" } end,
      "dynlog.metrics.configure: shared_dict must be the name of a lua_shared_dict")
  end)

  it("has one table of metrics, each with a type, help and labels, and each kept somewhere in lua/", function()
    local seen = {}
    for _, def in ipairs(metrics.METRICS) do
      assert.is_nil(seen[def.name], def.name)
      seen[def.name] = true
      assert.is_truthy(def.name:match("^dynlog_[a-z_]+$"), def.name)
      assert.is_truthy(({ counter = true, gauge = true, histogram = true })[def.type], def.name)
      assert.are.equal(def.type == "counter", def.name:sub(-6) == "_total", def.name)
      assert.is_true(#def.help > 10, def.name)
      local status = run.run("grep -rqF '\"" .. def.name .. "\"' lua/dynlog --exclude=metrics.lua")
      assert.are.equal(0, status, def.name .. " is kept nowhere")
    end
  end)

  it("is listed in docs/metrics.md exactly as the table has it: name, type, labels, meaning", function()
    local text = assert(run.read_file("docs/metrics.md"))
    local rows = {}
    for name, kind, labels, meaning in text:gmatch("\n| `(dynlog_[%w_]+)` | (%a+) | ([^|]+) | ([^\n]+) |") do
      rows[#rows + 1] = { name = name, type = kind, labels = labels, help = meaning }
    end
    local want = {}
    for i, def in ipairs(metrics.METRICS) do
      local labels = {}
      for j, l in ipairs(def.labels) do labels[j] = "`" .. l .. "`" end
      want[i] = { name = def.name, type = def.type, labels = #labels > 0 and table.concat(labels, ", ") or "none",
                  help = def.help }
    end
    assert.are.same(want, rows)
  end)
end)
