-- Like replay.lua, but each connection waits a fixed delay between requests, so the offered load is
-- about connections × 1000 / delay requests per second (while latency stays below the delay).
local requests = {}
local index = 1
local pause = 10

function init(args)
  local file = io.open(args[1], "r")
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
  pause = tonumber(args[3] or "10")
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
