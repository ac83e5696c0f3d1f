--- A loopback HTTPS server for TLS specs: `openssl s_server -www` with a
-- self-signed certificate made for the occasion.
local socket = require "socket"

local _M = {}

local function run(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok, "command failed: " .. cmd)
end

local free_port = require("spec.support.run").free_port

--- start{san = "IP:127.0.0.1"} -> {url=, cafile=, cert=, key=, stop=function}
-- (cafile and cert are the same self-signed certificate; key is its key)
function _M.start(opts)
  local dir = os.tmpname()
  os.remove(dir)
  run("mkdir -p " .. dir)
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  run(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=dynlog-test"
    .. " -addext subjectAltName=%s -keyout %s -out %s"):format(opts.san, key, cert))
  local port = free_port()
  local pipe = assert(io.popen(("openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www -quiet"
    .. " >/dev/null 2>&1 & echo $!"):format(port, cert, key)))
  local pid = assert(tonumber(pipe:read("*l")))
  pipe:close()
  for _ = 1, 100 do
    local probe = socket.connect("127.0.0.1", port)
    if probe then probe:close() break end
    socket.sleep(0.05)
  end
  return {
    url = ("https://127.0.0.1:%d/"):format(port),
    cafile = cert,
    cert = cert,
    key = key,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.execute("rm -rf " .. dir)
    end,
  }
end

return _M
