-- Replays bench/out/corpus.tsv (ip \t ua \t body per line) round-robin, each thread from its own offset.
-- Arguments: corpus file, offset seed, and an optional delay in milliseconds between a connection's
-- requests (for a fixed offered load of about connections × 1000 / delay requests per second).
local requests = {}
local index = 1
local pause = 0

function init(args)
  local file = io.open(args[1] or "bench/out/corpus.tsv", "r")
  for line in file:lines() do
    local ip, ua, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    if ip then
      requests[#requests + 1] = wrk.format("POST", "/api/event", {
        ["Content-Type"] = "text/plain",
        ["User-Agent"] = ua,
        ["X-Forwarded-For"] = ip,
      }, body)
    end
  end
  file:close()
  index = (tonumber(args[2] or "0") * 7919) % #requests + 1
  pause = tonumber(args[3] or "0")
  -- wrk paces a thread only when delay() exists: without a delay, remove it for full speed.
  if pause <= 0 then delay = nil end
end

function delay()
  return pause
end

function request()
  local r = requests[index]
  index = index + 1
  if index > #requests then index = 1 end
  return r
end
