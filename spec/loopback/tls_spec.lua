local http = require "dynlog.transport.curl"
local tls_server = require "spec.support.tls_server"

describe("dynlog.transport.curl over TLS", function()
  local server

  after_each(function()
    if server then server.stop() end
    server = nil
  end)

  it("refuses a self-signed certificate by default", function()
    server = tls_server.start({ san = "IP:127.0.0.1" })
    local res, err = http.new({ timeout = 5 }):request({ url = server.url })
    assert.is_nil(res)
    assert.are.equal("tls", err.code)
    assert.is_false(err.retryable)
  end)

  it("accepts that certificate once its CA file is configured", function()
    server = tls_server.start({ san = "IP:127.0.0.1" })
    local res = assert(http.new({ timeout = 5, cafile = server.cafile }):request({ url = server.url }))
    assert.are.equal(200, res.status)
  end)

  it("still checks the host name against a trusted certificate", function()
    server = tls_server.start({ san = "DNS:other.example" })
    local res, err = http.new({ timeout = 5, cafile = server.cafile }):request({ url = server.url })
    assert.is_nil(res)
    assert.are.equal("tls", err.code)
  end)
end)
