--- Deprecated name, kept until 1.0: use dynlog.transport.curl.
return require "dynlog.transport.curl"
