--- Deprecated name, kept until 1.0: use dynlog.transport.cosocket.
return require "dynlog.transport.cosocket"
